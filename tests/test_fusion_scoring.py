"""T_fusion scoring pieces: BIC-chosen DiagGMMScorer, its out-of-fold train_scores_, rank-min fusion, and the
RankMap that ranks scores among honest references with the order kept at both ends.

T_fusion is § 2.3 of the report
"Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold, StratifiedKFold

from asdx.scoring import DiagGMMScorer, min_fusion, rank_normalize
from asdx.scoring.fusion import RankMap, exceedance_to_rank


def planted(k: int, seed: int = 0, rows_per_cluster: int = 100, d: int = 4) -> np.ndarray:
    """k well-separated diagonal Gaussian clusters (centres 8 apart on the axes, scales 0.5-1.5)."""
    rng = np.random.default_rng(seed)
    centres = 8.0 * np.eye(k, d)
    scales = rng.uniform(0.5, 1.5, (k, d))
    return np.vstack([centres[j] + scales[j] * rng.standard_normal((rows_per_cluster, d)) for j in range(k)])


def sklearn_mixture(x, k, reg_covar=1e-6, max_iter=100, random_state=0) -> GaussianMixture:
    return GaussianMixture(k, covariance_type="diag", reg_covar=reg_covar, max_iter=max_iter,
                           random_state=random_state).fit(x)


# ------------------------------------------------------------------ BIC choice of K


@pytest.mark.parametrize("true_k", [1, 2, 3])
def test_bic_picks_the_planted_number_of_components(true_k):
    x = planted(true_k, seed=true_k)
    scorer = DiagGMMScorer("bic", max_components=6).fit(x)
    assert scorer.n_components_ == true_k
    assert sorted(scorer.bic_) == [1, 2, 3, 4, 5, 6]
    assert min(scorer.bic_, key=scorer.bic_.get) == true_k
    assert scorer.weights_.shape == (true_k,) and scorer.means_.shape == (true_k, 4)
    assert scorer.bic_[true_k] == pytest.approx(sklearn_mixture(x, true_k).bic(x), rel=1e-12)


def test_bic_candidates_stop_at_max_components_and_at_the_row_count():
    # max_components is inclusive: with 3 planted clusters and max_components=3, K=3 must be tried.
    scorer = DiagGMMScorer("bic", max_components=3).fit(planted(3))
    assert sorted(scorer.bic_) == [1, 2, 3] and scorer.n_components_ == 3
    few = np.random.default_rng(1).standard_normal((4, 2))
    assert sorted(DiagGMMScorer("bic", max_components=8).fit(few).bic_) == [1, 2, 3, 4]


def test_int_n_components_records_its_own_bic():
    x = planted(2)
    scorer = DiagGMMScorer(4).fit(x)
    assert scorer.n_components_ == 4 and list(scorer.bic_) == [4]
    assert scorer.bic_[4] == pytest.approx(sklearn_mixture(x, 4).bic(x), rel=1e-12)


def test_bic_scorer_matches_sklearn_score_samples():
    x = planted(3, seed=7)
    scorer = DiagGMMScorer("bic", max_components=5, reg_covar=1e-5, random_state=3).fit(x)
    model = sklearn_mixture(x, scorer.n_components_, reg_covar=1e-5, random_state=3)
    np.testing.assert_array_equal(scorer.means_, model.means_)
    np.testing.assert_array_equal(scorer.variances_, model.covariances_)
    queries = np.vstack([x[::7], 3.0 * np.random.default_rng(8).standard_normal((30, 4))])
    np.testing.assert_allclose(scorer.score_samples(queries), -model.score_samples(queries), rtol=1e-9)


# ------------------------------------------------------------------ out-of-fold scores


def domains(source: int, target: int) -> np.ndarray:
    return np.array(["source"] * source + ["target"] * target)


@pytest.mark.parametrize(
    "domain, splitter",
    [
        (domains(40, 20), StratifiedKFold(5, shuffle=True, random_state=0)),  # every domain >= n_splits
        (domains(57, 3), StratifiedKFold(3, shuffle=True, random_state=0)),   # reduced to the smallest count
        (domains(59, 1), KFold(5, shuffle=True, random_state=0)),             # a singleton domain: plain KFold
        (None, KFold(5, shuffle=True, random_state=0)),
    ],
    ids=["stratified", "reduced", "singleton", "no-domain"],
)
@pytest.mark.parametrize("n_components", [2, "bic"])
def test_train_scores_are_out_of_fold_and_match_a_direct_computation(domain, splitter, n_components):
    rng = np.random.default_rng(11)
    x = planted(2, seed=11, rows_per_cluster=30)[rng.permutation(60)]
    scorer = DiagGMMScorer(n_components, max_components=4, n_splits=5).fit(x, domain=domain)
    k = scorer.n_components_
    before = {name: np.copy(getattr(scorer, name)) for name in ("weights_", "means_", "variances_")}
    bic_before = dict(scorer.bic_)
    # the domain only stratifies the folds: the mixture is the one fitted without it
    unstratified = DiagGMMScorer(n_components, max_components=4).fit(x)
    np.testing.assert_array_equal(scorer.means_, unstratified.means_)

    oof = scorer.train_scores_

    expected = np.full(len(x), np.nan)
    for kept, held in splitter.split(x, domain):
        expected[held] = -sklearn_mixture(x[kept], k).score_samples(x[held])
    assert oof.dtype == np.float64 and oof.shape == (60,)
    np.testing.assert_allclose(oof, expected, rtol=1e-9)
    # the full-bank model is what fit() made
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(scorer, name), value)
    assert scorer.n_components_ == k and scorer.bic_ == bic_before
    # cached, and a copy each time: changing one does not change the next
    first = oof.copy()
    oof[:] = 0.0
    np.testing.assert_array_equal(scorer.train_scores_, first)


@pytest.mark.parametrize("n_components", [2, "bic"])
def test_train_scores_are_honest_about_an_outlier(n_components):
    rng = np.random.default_rng(0)
    x = np.vstack([rng.standard_normal((100, 4)), 6 + rng.standard_normal((100, 4)), np.full((1, 4), 25.0)])
    scorer = DiagGMMScorer(n_components, max_components=4).fit(x)
    in_sample = scorer.score_samples(x)
    oof = scorer.train_scores_
    # In-sample the outlier shaped the model (with "bic" it even gets its own component);
    # held out, it is as far from the normal rows as it really is.
    assert oof[-1] > in_sample[-1] + 300
    assert oof[-1] > 20 * np.median(oof[:-1])
    assert np.median(oof[:-1]) == pytest.approx(np.median(in_sample[:-1]), rel=0.1)


# ------------------------------------------------------------------ rank-min fusion


def mid_rank(score: float, reference: list[float]) -> float:
    below = sum(1 for r in reference if r < score)
    ties = sum(1 for r in reference if r == score)
    return (below + 0.5 * ties) / len(reference)


small_ints = st.integers(-3, 3).map(float)  # few distinct values: ties everywhere


@settings(max_examples=60, deadline=None)
@given(train_a=st.lists(small_ints, min_size=1, max_size=15),
       train_b=st.lists(small_ints, min_size=1, max_size=15),
       test=st.lists(st.tuples(small_ints, small_ints), min_size=1, max_size=15))
def test_rank_min_fusion_matches_loops_with_ties(train_a, train_b, test):
    test_a = [a for a, _ in test]
    test_b = [b for _, b in test]
    expected = [min(mid_rank(a, train_a), mid_rank(b, train_b)) for a, b in test]
    out = min_fusion(rank_normalize(np.array(test_a), np.array(train_a)),
                     rank_normalize(np.array(test_b), np.array(train_b)))
    assert out.dtype == np.float64 and out.shape == (len(test),)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(test=st.lists(small_ints, min_size=1, max_size=20))
def test_transductive_rank_is_average_rank(test):
    scores = np.array(test)
    expected = (rankdata(scores, method="average") - 0.5) / scores.size
    np.testing.assert_allclose(rank_normalize(scores, scores), expected, rtol=0, atol=1e-15)


# ------------------------------------------------------------------ the rank map with tails


def exceedance_reference(score: float, reference) -> float:
    """RankMap.exceedance written out for one score: i / (n + 1) at the i-th of n distinct reference values (tied
    values: the mean of their positions), linear in between, an exponential upper and a hyperbolic lower tail
    whose scales are the secants over the half of the references they extend."""
    ref = [float(r) for r in reference]
    n = len(ref)
    knots = sorted(set(ref))
    pos = [(sum(r < u for r in ref) + 0.5 * (sum(r == u for r in ref) + 1)) / (n + 1) for u in knots]
    if len(knots) == 1:
        up = low = 1.0
    else:
        a = max(j for j, p in enumerate(pos) if p <= 0.5)
        b = min(j for j, p in enumerate(pos) if p >= 0.5)
        up = (knots[-1] - knots[a]) / (math.log(1 - pos[a]) - math.log(1 - pos[-1]))
        low = (knots[b] - knots[0]) / (math.log(pos[b]) - math.log(pos[0]))
    if score > knots[-1]:
        return -math.log(1 - pos[-1]) + (score - knots[-1]) / up
    if score < knots[0]:
        return -math.log1p(-pos[0] / (1 + (knots[0] - score) / low))
    j = max(i for i, u in enumerate(knots) if u <= score)
    if knots[j] == score:
        rank = pos[j]
    else:
        t = (score - knots[j]) / (knots[j + 1] - knots[j])
        rank = pos[j] + t * (pos[j + 1] - pos[j])
    return -math.log1p(-rank)


reference_lists = st.lists(st.one_of(small_ints, st.floats(-5, 5, allow_nan=False)), min_size=1, max_size=12)


@settings(max_examples=80, deadline=None)
@given(reference=reference_lists, scores=st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=12))
def test_rank_map_matches_a_loop_reference(reference, scores):
    scores = np.array(scores + reference)  # the reference values themselves too
    got = RankMap(np.array(reference)).exceedance(scores)
    want = [exceedance_reference(s, reference) for s in scores]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


@settings(max_examples=80, deadline=None)
@given(reference=reference_lists)
def test_rank_map_puts_the_ith_of_n_references_at_i_over_n_plus_1(reference):
    ref = np.array(reference)
    np.testing.assert_allclose(RankMap(ref).rank(ref), rankdata(ref, method="average") / (ref.size + 1), rtol=1e-13,
                               atol=0)


@settings(max_examples=80, deadline=None)
@given(reference=reference_lists, steps=st.lists(st.integers(-4000, 4000), min_size=2, max_size=20))
def test_rank_map_is_strictly_increasing_and_ties_only_equal_scores(reference, steps):
    """Within and far beyond the references (up to 250 spreads): distinct scores, distinct exceedances, in order."""
    rank_map = RankMap(np.array(reference))
    step = (rank_map.knots[-1] - rank_map.knots[0]) / 16 or 1.0
    scores = rank_map.knots[0] + np.array(steps + steps[:3], dtype=np.float64) * step  # some exact repeats
    e = rank_map.exceedance(scores)
    order = np.argsort(scores, kind="stable")
    s_sorted, e_sorted = scores[order], e[order]
    same = np.diff(s_sorted) == 0
    assert np.all(np.diff(e_sorted)[same] == 0)
    assert np.all(np.diff(e_sorted)[~same] > 0)
    assert np.all(e > 0) and np.all(np.isfinite(e))


def test_rank_map_continues_the_order_past_both_ends_without_ties_or_zeros():
    reference = np.array([0.10, 0.12, 0.15, 0.15, 0.20, 0.31])  # six target-like references
    rank_map = RankMap(reference)
    below = np.linspace(-1.0, 0.099, 12)  # below every reference: the step rank was 0 for all of them
    above = np.linspace(0.32, 50.0, 12)  # above: the step rank was 1, the old score one capped value
    assert np.all(rank_normalize(below, reference) == 0) and np.all(rank_normalize(above, reference) == 1)
    for side in (below, above):
        e = rank_map.exceedance(side)
        assert np.all(np.diff(e) > 0) and np.all(e > 0) and np.unique(e).size == side.size
    # the upper tail is exponential (-log(1 - F) linear), the lower hyperbolic; both continuous at the ends
    e_top = math.log(7.0)  # F = 6 / 7 at the highest of 6
    np.testing.assert_allclose(rank_map.exceedance(above), e_top + (above - 0.31) / rank_map.upper_scale, rtol=1e-12)
    np.testing.assert_allclose(rank_map.rank(below), (1 / 7) / (1 + (0.10 - below) / rank_map.lower_scale),
                               rtol=1e-12)
    # the lower tail leaves the lowest reference with the slope of log F that lower_scale says
    h = 1e-7
    slope = (math.log(rank_map.rank(np.array([0.10]))[0]) - math.log(rank_map.rank(np.array([0.10 - h]))[0])) / h
    assert slope == pytest.approx(1 / rank_map.lower_scale, rel=1e-5)
    # far below, where an exponential tail would have underflowed to 0 (a tie), the ranks stay distinct
    deep = rank_map.exceedance(np.array([-1e3, -1e3 + 1.0]))
    assert 0 < deep[0] < deep[1]
    eps = 1e-9
    assert rank_map.exceedance(np.array([0.31 + eps]))[0] == pytest.approx(e_top, abs=1e-7)
    assert rank_map.rank(np.array([0.10 - eps]))[0] == pytest.approx(1 / 7, abs=1e-7)
    # scales: secants from the last knot with F <= 1/2 to the top and from the bottom to the first knot with
    # F >= 1/2, here both 0.15 (the 3rd and 4th of 6: F = 3.5 / 7 = 1/2)
    assert rank_map.upper_scale == pytest.approx((0.31 - 0.15) / (math.log(1 - 1 / 2) - math.log(1 / 7)))
    assert rank_map.lower_scale == pytest.approx((0.15 - 0.10) / (math.log(1 / 2) - math.log(1 / 7)))
    # far above, the rank rounds to 1 but the exceedance still orders the scores
    far = rank_map.exceedance(np.array([1e3, 1e3 + 1.0]))
    assert far[1] > far[0] and np.all(exceedance_to_rank(far) == 1.0)


def test_rank_map_of_one_distinct_value_has_unit_tails():
    rank_map = RankMap(np.array([2.0, 2.0, 2.0]))
    assert rank_map.upper_scale == rank_map.lower_scale == 1.0
    np.testing.assert_allclose(rank_map.rank(np.array([1.0, 2.0, 3.0])), [0.25, 0.5, 1 - 0.5 * math.exp(-1)])


@pytest.mark.parametrize("n", [6, 10, 46])
def test_exceedance_of_normal_scores_is_about_exponential(n):
    """What the gamma threshold sees: a fresh score drawn like the references lies above log(10) (F > 0.9)
    with probability about 0.1 and has mean exceedance about 1, at the reference sizes fusion meets (6-10 target,
    46 clips). Measured over 4000 gamma(2) reference sets: 0.106, 0.093, 0.104 and means 1.09, 1.01, 1.01; with
    the mid-rank (i - 1/2) / n at the references instead: 0.151, 0.120, 0.114."""
    rng = np.random.default_rng(n)
    above, means = [], []
    for _ in range(4000):
        reference = rng.gamma(2.0, size=n)
        e = RankMap(reference).exceedance(rng.gamma(2.0, size=4))
        above.append(np.mean(e > math.log(10)))
        means.append(e.mean())
    assert np.mean(above) == pytest.approx(0.10, abs=0.015)
    assert np.mean(means) == pytest.approx(1.0, abs=0.12)


def test_rank_map_errors_name_the_argument():
    with pytest.raises(ValueError, match="reference"):
        RankMap(np.zeros(0))
    with pytest.raises(ValueError, match="reference"):
        RankMap(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="scores"):
        RankMap(np.array([1.0, 2.0])).exceedance(np.array([np.inf]))
    assert RankMap(np.array([1.0])).exceedance(np.zeros(0)).shape == (0,)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("bad", ["three", 0, -1, 2.0, True, "BIC"])
def test_bad_n_components_is_named(bad):
    with pytest.raises(ValueError, match="n_components"):
        DiagGMMScorer(bad).fit(planted(1))


def test_bad_max_components_is_named():
    with pytest.raises(ValueError, match="max_components"):
        DiagGMMScorer("bic", max_components=0).fit(planted(1))


def test_train_scores_errors():
    x = planted(1, rows_per_cluster=12)
    for n_splits in (1, 0, 2.5, True, "5"):
        with pytest.raises(ValueError, match="n_splits: must be an integer >= 2"):
            DiagGMMScorer(2, n_splits=n_splits).fit(x)
    scorer = DiagGMMScorer(2, n_splits=13).fit(x)  # fit and score_samples do not need the folds
    assert scorer.score_samples(x).shape == (12,)
    with pytest.raises(ValueError, match="n_splits: 13 folds for the 12 rows"):
        scorer.train_scores_
    with pytest.raises(NotFittedError, match="fit"):
        DiagGMMScorer().train_scores_
    with pytest.raises(ValueError, match="domain"):
        DiagGMMScorer(2).fit(x, domain=["source"] * 5)
    # 6 rows, K = 5, two folds: each fold mixture would see only 3 rows
    six = planted(1, rows_per_cluster=6)
    with pytest.raises(ValueError, match="fewer than the n_components_=5 components"):
        DiagGMMScorer(5, n_splits=2).fit(six).train_scores_
