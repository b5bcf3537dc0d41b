"""The scorers follow scikit-learn where it costs nothing, and keep the DCASE score sign."""

import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import StratifiedKFold

from asdx.scoring import DiagGMMScorer, KNNScorer, MahalanobisScorer

SCORERS = [
    (MahalanobisScorer, dict(shrinkage=0.1, ridge=False)),
    (DiagGMMScorer, dict(n_components="bic", reg_covar=1e-5, max_iter=50, random_state=3, max_components=2,
                         n_splits=3)),
    (KNNScorer, dict(k=2, metric="l2", device=None)),
]


@pytest.mark.parametrize("cls, params", SCORERS)
def test_params_are_stored_unchanged_and_clone_works(cls, params):
    scorer = cls(**params)
    assert isinstance(scorer, BaseEstimator)
    assert scorer.get_params() == params
    copy = clone(scorer)
    assert copy is not scorer and copy.get_params() == params
    assert cls().set_params(**params).get_params() == params


@pytest.mark.parametrize("cls, params", SCORERS)
def test_unfitted_scorer_raises_not_fitted(cls, params):
    with pytest.raises(NotFittedError):
        cls(**params).score_samples(np.zeros((2, 3)))


@pytest.mark.parametrize("cls, params", SCORERS)
def test_higher_score_is_more_anomalous(cls, params):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    scorer = cls(**params).fit(x)
    scores = scorer.score_samples(np.array([[0.0, 0.0, 0.0], [8.0, -8.0, 8.0]]))
    assert scores.dtype == np.float64 and scores[1] > scores[0]  # the far point scores higher
    doc = cls.score_samples.__doc__ or ""
    assert "DCASE sign" in doc and "higher = more anomalous" in doc and "scikit-learn" in doc


# ------------------------------------------------------------------ train_scores_: honest scores of the fit rows


def two_domains(seed=0, source=40, target=8, d=4):
    """Correlated source rows, a shifted target domain, and one source row pushed far out."""
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.standard_normal((source, d)) @ rng.uniform(-1, 1, (d, d)),
                   rng.standard_normal((target, d)) + 4.0])
    x[5] += 6.0
    return x, np.array(["source"] * source + ["target"] * target)


@pytest.mark.parametrize("cls, params", SCORERS)
def test_train_scores_before_fit_raise_not_fitted(cls, params):
    scorer = cls(**params)
    with pytest.raises(NotFittedError, match="fit"):
        scorer.train_scores_
    assert not hasattr(scorer, "train_scores_")  # NotFittedError is an AttributeError, as in scikit-learn


@pytest.mark.parametrize("cls, params", SCORERS)
def test_train_scores_after_fit_are_cached_copies_of_the_data_given_to_fit(cls, params):
    x, domain = two_domains(1)
    x = x.astype(np.float32 if cls is KNNScorer else np.float64)  # the scorer's own dtype: no converting copy
    fit_domain = None if cls is DiagGMMScorer else domain
    scorer = cls(**params).fit(x, domain=fit_domain)
    expected = clone(scorer).fit(x.copy(), domain=fit_domain).train_scores_
    x[:] = 0.0  # the caller reuses its buffer: train_scores_ still describes the rows given to fit
    train = scorer.train_scores_
    assert train.dtype == np.float64 and train.shape == (48,) and np.isfinite(train).all()
    np.testing.assert_array_equal(train, expected)
    train[:] = -1.0  # a copy per access: the cache is not changed through it
    np.testing.assert_array_equal(scorer.train_scores_, expected)
    other, other_domain = two_domains(2, source=30)
    refit = scorer.fit(other, domain=None if fit_domain is None else other_domain)
    assert refit.train_scores_.shape == (38,)  # fit starts over


@pytest.mark.parametrize("cls, params", [(MahalanobisScorer, dict(shrinkage=None)),
                                         (MahalanobisScorer, dict(shrinkage=0.3)),
                                         (MahalanobisScorer, dict(shrinkage="ledoit-wolf")),
                                         (KNNScorer, dict(k=2))])
def test_leave_one_out_is_the_score_of_a_fit_without_the_row(cls, params):
    # The definition, row by row: fit without row i, score row i.
    x, domain = two_domains(3)
    train = cls(**params).fit(x, domain=domain).train_scores_
    for i in range(len(x)):
        alone = cls(**params).fit(np.delete(x, i, axis=0), domain=np.delete(domain, i))
        assert train[i] == pytest.approx(alone.score_samples(x[i : i + 1])[0], rel=1e-9), i


def test_knn_train_scores_equal_brute_force_leave_one_out():
    x, domain = two_domains(4, target=3)
    k = 3  # the 3-row target bank has too few rows once a row is out: its rows use the source bank only
    train = KNNScorer(k=k).fit(x, domain=domain).train_scores_
    expected = np.empty(len(x))
    for i in range(len(x)):
        per_domain = []
        for name in ("source", "target"):
            others = np.flatnonzero((domain == name) & (np.arange(len(x)) != i))
            if others.size >= k:
                per_domain.append(np.sort(np.linalg.norm(x[others] - x[i], axis=1))[:k].mean())
        expected[i] = min(per_domain)
    np.testing.assert_allclose(train, expected, rtol=1e-5)
    assert train[5] > 3 * np.median(train)  # the far row is not its own neighbour
    with pytest.raises(ValueError, match="leave-one-out neighbours"):
        KNNScorer(k=3).fit(x[-3:]).train_scores_


def test_gmm_train_scores_equal_sklearn_per_fold():
    x, domain = two_domains(5, source=60, target=8)
    params = dict(n_components=2, reg_covar=1e-5, random_state=4)
    train = DiagGMMScorer(**params, n_splits=4).fit(x, domain=domain).train_scores_
    expected = np.full(len(x), np.nan)
    for kept, held in StratifiedKFold(4, shuffle=True, random_state=4).split(x, domain):
        model = GaussianMixture(2, covariance_type="diag", reg_covar=1e-5, random_state=4).fit(x[kept])
        expected[held] = -model.score_samples(x[held])
    np.testing.assert_allclose(train, expected, rtol=1e-9)
    in_sample = DiagGMMScorer(**params).fit(x).score_samples(x)
    assert np.mean(train) > np.mean(in_sample)  # held-out rows look less likely than fitted ones


def numpy_leave_one_out_mahalanobis(x, domain, shrinkage):
    out = np.empty(len(x))
    for i in range(len(x)):
        per_domain = []
        for name in np.unique(domain):
            rows = x[(domain == name) & (np.arange(len(x)) != i)]
            if shrinkage == "ledoit-wolf":
                cov = LedoitWolf().fit(rows).covariance_
            else:
                s = np.cov(rows, rowvar=False)
                cov = (1 - shrinkage) * s + shrinkage * np.trace(s) / len(s) * np.eye(len(s))
            diff = x[i] - rows.mean(0)
            per_domain.append(diff @ np.linalg.inv(cov) @ diff)
        out[i] = min(per_domain)
    return out


@pytest.mark.parametrize("shrinkage", [None, 0.3, "ledoit-wolf"])
def test_mahalanobis_train_scores_equal_numpy_leave_one_out(shrinkage):
    x, domain = two_domains(6)
    scorer = MahalanobisScorer(shrinkage=shrinkage).fit(x, domain=domain)
    train = scorer.train_scores_
    expected = numpy_leave_one_out_mahalanobis(x, domain, 0.0 if shrinkage is None else shrinkage)
    np.testing.assert_allclose(train, expected, rtol=1e-9)
    in_sample = scorer.score_samples(x)
    assert np.all(train >= in_sample * (1 - 1e-12))  # in-sample distances are biased low
    assert np.mean(train) > 1.1 * np.mean(in_sample)


def test_mahalanobis_train_scores_refit_singular_left_out_covariances():
    # Row 0 alone leaves the plane z = 0: without it the covariance is singular (a ridge is added,
    # with a warning, as fit would); the 4 target rows in 5 dimensions need a ridge for every fit.
    rng = np.random.default_rng(7)
    flat = np.c_[rng.standard_normal((20, 2)), np.zeros(20)]
    flat[0, 2] = 1.0
    with pytest.warns(UserWarning, match="1 leave-one-out covariance"):
        train = MahalanobisScorer().fit(flat).train_scores_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [MahalanobisScorer().fit(np.delete(flat, i, axis=0)).score_samples(flat[i : i + 1])[0]
                    for i in range(20)]
        np.testing.assert_allclose(train, expected, rtol=1e-9)
        assert train[0] > 1e6 * np.median(train)
        with pytest.raises(ValueError, match="leaving row 0 out of the all domain"):
            MahalanobisScorer(ridge=False).fit(flat).train_scores_
        x = np.vstack([rng.standard_normal((30, 5)), rng.standard_normal((4, 5)) + 3.0])
        domain = np.array([0] * 30 + [1] * 4)
        # the message names a row of X, not a row of the domain
        with pytest.raises(ValueError, match="leaving row 25 out of the target domain"):
            MahalanobisScorer(ridge=False).fit(np.vstack([rng.standard_normal((25, 3)), flat]),
                                               domain=[0] * 25 + [1] * 20).train_scores_
        train = MahalanobisScorer().fit(x, domain=domain).train_scores_
        expected = [MahalanobisScorer().fit(np.delete(x, i, axis=0), domain=np.delete(domain, i))
                    .score_samples(x[i : i + 1])[0] for i in range(len(x))]
    np.testing.assert_allclose(train, expected, rtol=1e-9)
    with pytest.warns(UserWarning, match="ridge"), pytest.raises(ValueError, match="the all domain has 2 rows"):
        MahalanobisScorer().fit(flat[:2]).train_scores_  # (2 rows in 3 dimensions: fit adds a ridge)
