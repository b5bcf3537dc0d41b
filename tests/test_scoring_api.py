"""The scorers follow scikit-learn where it costs nothing, and keep the DCASE score sign."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from asdx.scoring import DiagGMMScorer, KNNScorer, MahalanobisScorer

SCORERS = [
    (MahalanobisScorer, dict(shrinkage=0.1, ridge=False)),
    (DiagGMMScorer, dict(n_components="bic", reg_covar=1e-5, max_iter=50, random_state=3, max_components=2)),
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
    assert "DCASE sign" in cls.__doc__ or "DCASE sign" in (cls.score_samples.__doc__ or "")
