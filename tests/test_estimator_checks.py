"""scikit-learn's estimator checks on every scorer of asdx.scoring (results: docs/estimator_checks.md).

All of scikit-learn's checks pass, with default and non-default parameters, so nothing is listed
in expected_failed_checks. One is skipped by scikit-learn itself: check_array_api_input runs only
when SCIPY_ARRAY_API=1 is set before SciPy is imported (it passes then too; see the doc).
"""

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from asdx.scoring import BandMemoryScorer, DiagGMMScorer, KNNScorer, MahalanobisScorer

SCORERS = [
    KNNScorer(),
    KNNScorer(k=3, metric="cosine"),
    DiagGMMScorer(),
    DiagGMMScorer(n_components="bic", max_components=3),
    MahalanobisScorer(),
    MahalanobisScorer(shrinkage="ledoit-wolf", ridge=False),
    MahalanobisScorer(shrinkage=0.2),
    BandMemoryScorer(),  # 2-D X: one band
    BandMemoryScorer(n_density_neighbors=1, varmin=False),
]

# check name -> why it is expected to fail; none is (a check that starts failing must be fixed or
# listed here with its reason, and in docs/estimator_checks.md).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(SCORERS, expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_every_scorer_is_checked():
    """A new BaseEstimator in asdx.scoring must join SCORERS (and the doc's table)."""
    import inspect

    from sklearn.base import BaseEstimator

    import asdx.scoring
    from asdx.scoring import GammaThreshold

    scorers = {obj for _, obj in inspect.getmembers(asdx.scoring, inspect.isclass)
               if issubclass(obj, BaseEstimator) and obj is not GammaThreshold}  # a threshold, not a scorer
    assert scorers == {type(s) for s in SCORERS}


def two_domains(seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.standard_normal((40, 3)), rng.standard_normal((10, 3)) + 6.0])
    return x, np.array(["source"] * 40 + ["target"] * 10)


@pytest.mark.parametrize("cls", [KNNScorer, DiagGMMScorer, MahalanobisScorer])
def test_a_pipeline_routes_the_domain_to_the_scorer(cls):
    """fit(X, y=None, *, domain=None): Pipeline.fit(X, <step>__domain=d) reaches the scorer's domain
    (with domain in y's place it failed: "got multiple values for argument 'domain'")."""
    x, domain = two_domains()
    pipeline = make_pipeline(StandardScaler(), cls())
    step = pipeline.steps[-1][0]
    pipeline.fit(x, **{f"{step}__domain": domain})
    direct = cls().fit(StandardScaler().fit_transform(x), domain=domain)
    np.testing.assert_array_equal(pipeline.score_samples(x), direct.score_samples(StandardScaler().fit_transform(x)))
    np.testing.assert_array_equal(pipeline[-1].train_scores_, direct.train_scores_)


@pytest.mark.parametrize("cls", [KNNScorer, DiagGMMScorer, MahalanobisScorer])
def test_y_is_ignored_and_domain_is_keyword_only(cls):
    x, domain = two_domains(1)
    with_domain = cls().fit(x, domain=domain)
    assert with_domain is not None
    np.testing.assert_array_equal(cls().fit(x, np.arange(len(x))).score_samples(x), cls().fit(x).score_samples(x))
    with pytest.raises(TypeError):
        cls().fit(x, None, domain)  # the labels go in domain=, by keyword


def test_metadata_routing_requests_the_domain():
    from sklearn import config_context

    x, domain = two_domains(2)
    with config_context(enable_metadata_routing=True):
        pipeline = make_pipeline(StandardScaler(), KNNScorer().set_fit_request(domain=True)).fit(x, domain=domain)
    assert sorted(pipeline[-1].banks_) == ["source", "target"]


@pytest.mark.parametrize("cls, params, pattern", [
    (MahalanobisScorer, dict(ridge=-1), "ridge: must be True or False, got -1"),
    (MahalanobisScorer, dict(ridge="yes"), "ridge: must be True or False"),
    (MahalanobisScorer, dict(shrinkage=1.5), "shrinkage: must be in"),
    (MahalanobisScorer, dict(shrinkage="oas"), "shrinkage: expected None, 'ledoit-wolf'"),
    (MahalanobisScorer, dict(shrinkage=True), "shrinkage: expected None, 'ledoit-wolf'"),
    (KNNScorer, dict(k=0), "k: must be an integer >= 1, got 0"),
    (KNNScorer, dict(k=2.0), "k: must be an integer >= 1"),
    (KNNScorer, dict(metric="manhattan"), "metric: expected one of 'l2', 'cosine', got 'manhattan'"),
    (KNNScorer, dict(device="gpu"), "device: expected one of None, 'cpu', 'cuda', got 'gpu'"),
    (DiagGMMScorer, dict(n_components=0), 'n_components: must be an integer >= 1 or "bic"'),
    (DiagGMMScorer, dict(n_components="aic"), 'n_components: must be an integer >= 1 or "bic"'),
    (DiagGMMScorer, dict(max_iter=0), "max_iter: must be an integer >= 1, got 0"),
    (DiagGMMScorer, dict(max_iter=1.5), "max_iter: must be an integer >= 1"),
    (DiagGMMScorer, dict(reg_covar=-1e-6), "reg_covar: must be a finite number >= 0"),
    (DiagGMMScorer, dict(reg_covar=float("nan")), "reg_covar: must be a finite number >= 0"),
    (DiagGMMScorer, dict(reg_covar=True), "reg_covar: must be a finite number >= 0"),
    (DiagGMMScorer, dict(random_state=-1), "random_state: must be None, an integer"),
    (DiagGMMScorer, dict(random_state="seed"), "random_state: must be None, an integer"),
    (DiagGMMScorer, dict(max_components=0), "max_components: must be an integer >= 1"),
    (DiagGMMScorer, dict(n_splits=1), "n_splits: must be an integer >= 2"),
])
def test_fit_refuses_bad_parameters_naming_them(cls, params, pattern):
    x, _ = two_domains(3)
    scorer = cls(**params)  # stored unchanged, as scikit-learn does: checked in fit
    assert scorer.get_params()[next(iter(params))] is next(iter(params.values()))
    with pytest.raises(ValueError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        scorer.fit(x)


@pytest.mark.parametrize("cls, attribute", [(KNNScorer, "banks_"), (DiagGMMScorer, "means_"),
                                            (MahalanobisScorer, "factors_")])
def test_not_fitted_error_names_the_method_called(cls, attribute):
    from sklearn.exceptions import NotFittedError

    x = np.zeros((2, 3))
    with pytest.raises(NotFittedError, match=r"call fit\(X\) before score_samples\(X\)\.$"):
        cls().score_samples(x)
    with pytest.raises(NotFittedError, match=r"before reading train_scores_"):
        cls().train_scores_
    if cls is MahalanobisScorer:
        with pytest.raises(NotFittedError, match=r"before domain_scores\(X\)\.$"):
            cls().domain_scores(x)


@pytest.mark.parametrize("cls", [KNNScorer, DiagGMMScorer, MahalanobisScorer])
def test_a_pickled_scorer_scores_the_same(cls):
    """scikit-learn's pickle check compares predict/transform only: score_samples and train_scores_ here."""
    import pickle

    x, domain = two_domains(4)
    scorer = cls().fit(x, domain=domain)
    copy = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(copy.score_samples(x), scorer.score_samples(x))
    np.testing.assert_array_equal(copy.train_scores_, scorer.train_scores_)
