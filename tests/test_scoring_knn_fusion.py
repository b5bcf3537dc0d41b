"""KNNScorer, rank normalisation and fusion helpers."""

import numpy as np
import pytest
from scipy.stats import percentileofscore, rankdata
from sklearn.exceptions import NotFittedError

from asdx.scoring import KNNScorer, mean_fusion, min_fusion, rank_normalize


def clusters(seed=0):
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((200, 6)) + 5.0
    target = rng.standard_normal((10, 6)) - 5.0
    X = np.concatenate([source, target]).astype(np.float32)
    domain = np.array(["source"] * 200 + ["target"] * 10)
    return X, domain


def test_knn_scorer_takes_the_nearer_domain():
    X, domain = clusters()
    scorer = KNNScorer(k=1).fit(X, domain=domain)
    near_target = np.full((1, 6), -5.0, np.float32)
    far = np.full((1, 6), 40.0, np.float32)
    scores = scorer.score_samples(np.concatenate([near_target, far]))
    assert scores[0] < 3.0 < scores[1]
    expected = min(np.linalg.norm(X[domain == "target"] - near_target, axis=1).min(),
                   np.linalg.norm(X[domain == "source"] - near_target, axis=1).min())
    assert scores[0] == pytest.approx(expected, rel=1e-5)


def test_knn_train_scores_are_leave_one_out():
    X, domain = clusters(1)
    scorer = KNNScorer(k=2).fit(X, domain=domain)
    train = scorer.train_scores_
    assert train.shape == (210,) and np.all(train > 0)
    i = 7
    others = np.delete(X, i, axis=0)
    others_domain = np.delete(domain, i)
    own = np.sort(np.linalg.norm(others[others_domain == "source"] - X[i], axis=1))[:2].mean()
    cross = np.sort(np.linalg.norm(X[domain == "target"] - X[i], axis=1))[:2].mean()
    assert train[i] == pytest.approx(min(own, cross), rel=1e-4)


def _brute_columns(X, domain, queries, k, leave_out=False):
    """NumPy reference of the per-domain columns: mean L2 distance to the k nearest of each domain's rows."""
    out = np.full((len(queries), 2), np.nan)
    for column, name in enumerate(("source", "target")):
        bank = X[domain == name]
        if len(bank) == 0:
            continue
        d = np.linalg.norm(queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64), axis=2)
        if leave_out:  # the training rows themselves: each left out of its own domain's bank
            own = np.flatnonzero(domain == name)
            d[own, np.arange(len(own))] = np.inf
        d = np.sort(d, axis=1)[:, :k]
        out[:, column] = np.where(np.isfinite(d).all(axis=1), d.mean(axis=1), np.nan)
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_knn_domain_columns_match_a_brute_force_reference(k):
    """The per-domain columns sera and fusion read: distances to each bank (row minimum = score_samples), and
    the training rows' leave-one-out columns (row minimum = train_scores_)."""
    rng = np.random.default_rng(k)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    domain = np.array(["source"] * 30 + ["target"] * 10)
    queries = rng.standard_normal((7, 5)).astype(np.float32)
    scorer = KNNScorer(k=k).fit(X, domain=domain)
    columns = scorer.domain_distances(queries)
    np.testing.assert_allclose(columns, _brute_columns(X, domain, queries, k), rtol=1e-4)
    np.testing.assert_array_equal(scorer.score_samples(queries), columns.min(axis=1))
    train = scorer.train_domain_distances_
    np.testing.assert_allclose(train, _brute_columns(X, domain, X, k, leave_out=True), rtol=1e-4)
    np.testing.assert_array_equal(scorer.train_scores_, train.min(axis=1))
    one = KNNScorer(k=k).fit(X)  # one bank: the target column is NaN
    assert np.isnan(one.domain_distances(queries)[:, 1]).all() and np.isnan(one.train_domain_distances_[:, 1]).all()
    np.testing.assert_array_equal(one.score_samples(queries), one.domain_distances(queries)[:, 0])


def test_knn_without_domain_and_bad_input():
    X, _ = clusters()
    scorer = KNNScorer(k=3, metric="cosine").fit(X)
    assert scorer.score_samples(X[:4]).shape == (4,)
    with pytest.raises(ValueError, match="domain"):
        KNNScorer().fit(X, domain=["source"] * 3)
    with pytest.raises(ValueError, match="domain: labels must be"):
        KNNScorer().fit(X, domain=np.array(["src"] * len(X)))
    with pytest.raises(ValueError, match="X has 5 features"):
        scorer.score_samples(np.zeros((2, 5)))
    with pytest.raises(NotFittedError, match="fit"):
        KNNScorer().score_samples(X)
    with pytest.raises(ValueError, match="k: must be"):
        KNNScorer(k=0).fit(X)
    with pytest.raises(ValueError, match="fewer than k"):
        KNNScorer(k=20).fit(X, domain=np.array(["source"] * 200 + ["target"] * 10))


def test_rank_normalize_is_the_mid_rank_ecdf():
    # Independent oracles: scipy's percentileofscore(kind="mean") is the mean of the strict and
    # the weak ECDF (ties counted half), and the average rank of the score among reference + score
    # is one more than that count.
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 10, size=50).astype(float)
    scores = np.array([-1.0, 0.0, 4.0, 4.5, 9.0, 11.0])
    out = rank_normalize(scores, reference)
    expected = np.array([percentileofscore(reference, s, kind="mean") / 100 for s in scores])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    by_rank = np.array([(rankdata(np.append(reference, s))[-1] - 1) / reference.size for s in scores])
    np.testing.assert_allclose(out, by_rank, rtol=0, atol=1e-12)
    assert out[0] == 0.0 and out[-1] == 1.0


def test_fusion_helpers():
    a, b = np.array([0.1, 0.9, 0.5]), np.array([0.3, 0.2, 0.5])
    np.testing.assert_array_equal(min_fusion(a, b), [0.1, 0.2, 0.5])
    np.testing.assert_allclose(mean_fusion(a, b), [0.2, 0.55, 0.5])
    with pytest.raises(ValueError, match=r"scores\[1\]: shape"):
        min_fusion(a, b[:2])
    with pytest.raises(ValueError, match="at least one"):
        min_fusion()
    with pytest.raises(ValueError, match="reference: is empty"):
        rank_normalize(a, [])
