"""T_fusion scoring pieces (system report §2.3): BIC-chosen DiagGMMScorer, its out-of-fold train_scores_,
rank-min fusion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold, StratifiedKFold

from asdx.scoring import DiagGMMScorer, min_fusion, rank_normalize


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
