"""GammaThreshold: the baseline's decision rule, its fallbacks, its state and its calibration."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats as stats
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import asdx.reference.gamma as ref
from asdx.scoring import gamma as G
from asdx.scoring import threshold as T


def _fit_quietly(train, **params) -> T.GammaThreshold:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", G.GammaFitWarning)
        return T.GammaThreshold(**params).fit(train)


def test_threshold_default_is_the_baseline_rule():
    x = np.random.default_rng(5).gamma(3.0, 2.0, size=1000) + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", G.GammaFitWarning)  # the interior MLE: no fallback, no warning
        model = T.GammaThreshold().fit(x)
    assert model.q == 0.9 and model.loc is None
    assert model.method_ == "mle" and model.fallback_reason_ is None
    fit = G.fit_gamma(x)
    assert (model.shape_, model.loc_, model.scale_) == (fit.shape, fit.loc, fit.scale)
    assert model.threshold_ == fit.ppf(0.9)
    np.testing.assert_allclose(model.threshold_, ref.gamma_threshold(x), rtol=1e-3)
    fixed = T.GammaThreshold(q=0.95, loc=0.0).fit(x)
    assert fixed.loc_ == 0.0 and fixed.threshold_ == G.fit_gamma(x, loc=0.0).ppf(0.95)
    assert fixed.method_ == "mle"


def test_decide_is_strict():
    model = T.GammaThreshold().fit(np.random.default_rng(6).gamma(2.0, size=200))
    t = model.threshold_
    scores = np.array([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), t + 1.0, -5.0])
    decisions = model.decide(scores)
    assert decisions.dtype == np.int64
    np.testing.assert_array_equal(decisions, [0, 1, 0, 1, 0])
    as_tensor = model.decide(torch.from_numpy(scores))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="scores"):
        model.decide(np.array([1.0, np.nan]))


@pytest.mark.parametrize("train", [np.array([3.0, 5.0]), np.full(20, 4.0), np.array([2.0]),
                                   np.array([1.0, 1.0, 2.0, 2.0, 2.0])])
def test_threshold_conformal_where_no_gamma_can_be_fitted(train):
    with pytest.warns(G.GammaFitWarning, match="conformal"):
        model = T.GammaThreshold().fit(train)
    # ceil((n + 1) 0.9) > n for these n: the conformal quantile is the largest score
    assert model.threshold_ == train.max() and math.isnan(model.shape_)
    assert model.status_ in (1, 2, 5) and model.method_ == "conformal"
    assert G.STATUS[model.status_] in model.fallback_reason_
    np.testing.assert_array_equal(model.decide(np.array([train.max(), train.max() + 1e-9])), [0, 1])


def test_conformal_quantile_rank():
    x = np.arange(1.0, 31.0)  # 30 scores: rank ceil(31 * 0.9) = 28
    assert T.conformal_quantile(x, 0.9) == 28.0 == ref.conformal_quantile(x, 0.9)
    assert T.conformal_quantile(x[:9], 0.9) == 9.0  # rank 9 = n
    assert T.conformal_quantile(x[:5], 0.9) == 5.0  # rank 6 > n: the largest
    assert T.conformal_quantile(x[:5], 0.5) == 3.0


def test_small_and_j_shaped_sets_use_the_spacings_fit_and_say_why():
    rng = np.random.default_rng(11)
    small = rng.gamma(3.0, size=8)
    with pytest.warns(G.GammaFitWarning, match="only 8 scores"):
        model = T.GammaThreshold().fit(small)
    assert model.method_ == "mps" and "only 8 scores" in model.fallback_reason_
    assert model.threshold_ == G.fit_gamma(small).ppf(0.9)
    j_shaped = rng.gamma(0.3, size=46)
    with pytest.warns(G.GammaFitWarning, match="no interior maximum"):
        model = T.GammaThreshold().fit(j_shaped)
    assert model.method_ == "mps" and model.fallback_reason_ == T.NO_INTERIOR_REASON
    assert model.loc_ < j_shaped.min() and model.threshold_ == G.fit_gamma(j_shaped).ppf(0.9)


def test_threshold_errors():
    with pytest.raises(ValueError, match="train_scores"):
        T.GammaThreshold().fit([1.0, np.inf, 2.0, 3.0])
    with pytest.raises(ValueError, match="train_scores"):
        T.GammaThreshold(loc=0.0).fit([-1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="train_scores"):
        T.GammaThreshold().fit([])
    with pytest.raises(ValueError, match="q"):
        T.GammaThreshold(q=1.0).fit([1.0, 2.0, 4.0])
    with pytest.raises(NotFittedError, match="fit"):
        T.GammaThreshold().decide([1.0])
    with pytest.raises(ValueError, match="fit"):  # NotFittedError is a ValueError
        T.GammaThreshold().to_dict()


def test_threshold_round_trip_through_json():
    rng = np.random.default_rng(7)
    for train in (rng.gamma(2.0, size=100), rng.gamma(0.3, size=46), rng.gamma(2.0, size=6), np.full(5, 1.0)):
        model = _fit_quietly(train, q=0.8)
        state = json.loads(json.dumps(model.to_dict(), allow_nan=False))
        assert state["method"] == model.method_ and state["fallback_reason"] == model.fallback_reason_
        restored = T.GammaThreshold.from_dict(state)
        assert restored.threshold_ == model.threshold_ and restored.q == 0.8 and restored.status_ == model.status_
        assert (restored.method_, restored.fallback_reason_) == (model.method_, model.fallback_reason_)
        for name in ("shape_", "loc_", "scale_"):
            a, b = getattr(model, name), getattr(restored, name)
            assert a == b or (math.isnan(a) and math.isnan(b))
    with pytest.raises(ValueError, match="state"):
        T.GammaThreshold.from_dict({"q": 0.9})


def test_from_dict_reads_threshold_json_written_before_the_method_was_recorded():
    old_fit = {"q": 0.9, "loc": None, "threshold": 3.2, "shape": 2.0, "loc_fitted": 0.5, "scale": 0.7,
               "loglik": -10.0, "status": 0, "n_train": 46}
    model = T.GammaThreshold.from_dict(old_fit)
    assert model.method_ == "mle" and model.fallback_reason_ is None and model.threshold_ == 3.2
    old_fallback = {**old_fit, "shape": None, "loc_fitted": None, "scale": None, "loglik": None, "status": 1}
    model = T.GammaThreshold.from_dict(old_fallback)
    assert model.method_ == "max" and model.fallback_reason_ == G.STATUS[1]


def test_threshold_is_a_scikit_learn_estimator():
    model = T.GammaThreshold(q=0.8, loc=0.0)
    assert model.get_params() == {"q": 0.8, "loc": 0.0}
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params() and not hasattr(copy, "threshold_")
    assert copy.set_params(q=0.95) is copy and copy.q == 0.95
    fitted = T.GammaThreshold().fit(np.random.default_rng(3).gamma(4.0, size=200), None)  # fit(X, y=None)
    assert not hasattr(clone(fitted), "threshold_")
    assert repr(T.GammaThreshold(q=0.8)) == "GammaThreshold(q=0.8)"


@pytest.mark.parametrize("n, shape", [(46, 0.5), (46, 3.0), (5, 0.5)])
def test_threshold_is_calibrated_on_fresh_draws(n, shape):
    # A test score from the train scores' distribution should exceed the threshold with
    # probability 1 - q = 0.10. On 40 sets, the mean exceedance (exact, from the gamma's survival
    # function) must stay near it: scipy's fit gives 0.31 on gamma(0.5) x 5 (its boundary fits).
    rng = np.random.default_rng(n + int(10 * shape))
    exceed = np.array([stats.gamma.sf(_fit_quietly(rng.gamma(shape, size=n)).threshold_, shape) for _ in range(40)])
    assert 0.06 <= exceed.mean() <= (0.14 if n >= 46 else 0.16)
    assert np.mean(exceed > 0.3) <= (0.0 if n >= 46 else 0.15)
