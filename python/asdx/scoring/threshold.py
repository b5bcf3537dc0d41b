"""The DCASE decision threshold: a gamma fitted to normal training scores, its q-quantile (q = 0.9).

As the official DCASE 2023 Task 2 baseline (nttcslab/dcase2023_task2_baseline_ae) decides:
a test clip is anomalous when its score is strictly above the threshold. The baseline fits
scipy.stats.gamma.fit; asdx fits the same interior likelihood maximum where there is one and
enough scores, and says in method_ how the threshold was found otherwise (asdx.scoring.gamma,
docs/threshold.md):

- "mle": the q-quantile of the maximum-likelihood gamma (what the baseline computes);
- "mps": of the maximum product of spacings gamma, where the likelihood has no interior
  maximum (J-shaped scores) or there are fewer than MIN_MLE_SCORES scores;
- "conformal": no gamma can be fitted (fewer than 3 scores, constant scores, fewer than 3
  distinct ones): the ceil((n + 1) q)-th smallest score, the largest when that rank exceeds
  n (split-conformal: a fresh exchangeable score exceeds it with probability <= 1 - q).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from asdx._arrays import prepare
from asdx.scoring.gamma import MIN_MLE_SCORES, STATUS, GammaFitWarning, check_loc, fit_sets, gamma_ppf

__all__ = ["GammaThreshold", "conformal_quantile"]

NO_INTERIOR_REASON = ("the likelihood has no interior maximum (it rises towards the spike at the lowest score, "
                      "shape < 1)")


def conformal_quantile(scores: np.ndarray, q: float) -> float:
    """The ceil((n + 1) q)-th smallest of n scores, the largest when that rank exceeds n."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((ordered.size + 1) * q)
    return float(ordered[min(rank, ordered.size) - 1])


class GammaThreshold(BaseEstimator):
    """Decision threshold from a gamma fit of normal training scores, as the official baseline does.

    fit(train_scores) fits the gamma (all three parameters free by default, as the baseline
    does; loc=0.0 fixes the location) and sets threshold_ = ppf(q). decide(scores) returns 1
    where a score is strictly above threshold_ (a score equal to it is normal), else 0.

    method_ says how threshold_ was found ("mle", "mps" or "conformal", module docstring) and
    fallback_reason_ why it is not "mle" (None when it is). A fallback warns with a
    GammaFitWarning. With "conformal", shape_, loc_, scale_ are NaN and status_ holds the
    reason (asdx.scoring.gamma.STATUS). NaN/inf training scores raise ValueError, as do
    scores <= loc when the location is fixed. A scikit-learn estimator: get_params,
    set_params and clone work.
    """

    def __init__(self, q: float = 0.9, loc: float | None = None):
        self.q = q
        self.loc = loc

    def _check_params(self) -> None:
        if not (isinstance(self.q, (int, float)) and 0.0 < float(self.q) < 1.0):
            raise ValueError(f"q: must be a probability in (0, 1), got {self.q!r}.")
        check_loc(self.loc)

    def fit(self, train_scores, y=None) -> "GammaThreshold":
        """Fits on 1-D train_scores; y is ignored (scikit-learn's signature)."""
        self._check_params()
        scores = prepare(train_scores, "train_scores", ndim=1, dtype=np.float64, allow_empty=False).numpy()
        fixed, loc_value = check_loc(self.loc)
        fit = fit_sets(scores, np.array([0, scores.size], dtype=np.int64), fixed, loc_value)[0]
        if fit.status == 4:
            raise ValueError(f"train_scores: with loc fixed at {loc_value!r} every score must be > loc; "
                             f"the minimum is {float(scores.min())!r}.")
        self.status_ = fit.status
        self.n_train_ = int(scores.size)
        self.shape_, self.loc_, self.scale_, self.loglik_ = fit.shape, fit.loc, fit.scale, fit.loglik
        if fit.ok:
            self.threshold_ = float(gamma_ppf(float(self.q), fit.shape, fit.loc, fit.scale))
            self.method_ = fit.method
            if fit.method == "mle":
                self.fallback_reason_ = None
            elif scores.size < MIN_MLE_SCORES:
                self.fallback_reason_ = (f"only {scores.size} scores (< {MIN_MLE_SCORES}): too few for the "
                                         "three-parameter likelihood")
            else:
                self.fallback_reason_ = NO_INTERIOR_REASON
        else:
            self.threshold_ = conformal_quantile(scores, float(self.q))
            self.method_ = "conformal"
            self.fallback_reason_ = f"no gamma can be fitted: {STATUS[fit.status]}"
        if self.fallback_reason_ is not None:
            estimate = {"mps": "the maximum product of spacings gamma",
                        "conformal": "the conformal quantile of the scores"}[self.method_]
            warnings.warn(f"GammaThreshold: {self.fallback_reason_}; threshold_ = {self.threshold_!r} from "
                          f"{estimate} (method_ = {self.method_!r}).", GammaFitWarning, stacklevel=2)
        return self

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"GammaThreshold: call fit(train_scores) before {what}().")

    def decide(self, scores):
        """1 (anomaly) where score > threshold_ strictly, else 0; int64, in the input's kind."""
        self._require_fitted("decide")
        prepared = prepare(scores, "scores", ndim=1, dtype=np.float64)
        if prepared.is_torch:
            return (prepared.data > self.threshold_).to(torch.int64)
        return (prepared.data > self.threshold_).astype(np.int64)

    def to_dict(self) -> dict:
        """JSON-ready state (NaN written as None) for a run directory."""
        self._require_fitted("to_dict")

        def clean(value: float):
            return None if not math.isfinite(value) else float(value)

        return {"q": float(self.q), "loc": self.loc if self.loc is None else float(self.loc),
                "threshold": float(self.threshold_), "method": self.method_,
                "fallback_reason": self.fallback_reason_, "shape": clean(self.shape_),
                "loc_fitted": clean(self.loc_), "scale": clean(self.scale_), "loglik": clean(self.loglik_),
                "status": int(self.status_), "n_train": int(self.n_train_)}

    @classmethod
    def from_dict(cls, state: dict) -> "GammaThreshold":
        """Inverse of to_dict; dicts written before method/fallback_reason existed read as "mle"
        (status 0) or "max" (their fallback was the largest training score)."""
        try:
            model = cls(q=float(state["q"]), loc=state["loc"])
            model.threshold_ = float(state["threshold"])

            def restore(value):
                return math.nan if value is None else float(value)

            model.shape_ = restore(state["shape"])
            model.loc_ = restore(state["loc_fitted"])
            model.scale_ = restore(state["scale"])
            model.loglik_ = restore(state["loglik"])
            model.status_ = int(state["status"])
            model.n_train_ = int(state["n_train"])
            model.method_ = str(state.get("method", "mle" if model.status_ == 0 else "max"))
            reason = state.get("fallback_reason", None if model.status_ == 0 else STATUS.get(model.status_))
            model.fallback_reason_ = None if reason is None else str(reason)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"state: not a GammaThreshold.to_dict() result ({error!r}).") from error
        model._check_params()
        return model
