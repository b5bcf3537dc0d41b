"""The DCASE decision threshold: a gamma fitted to normal training scores, its q-quantile (q = 0.9).

As the official DCASE 2023 Task 2 baseline (nttcslab/dcase2023_task2_baseline_ae) decides:
a test clip is anomalous when its score is strictly above the threshold.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from asdx._arrays import prepare
from asdx.scoring.gamma import STATUS, GammaFitWarning, _fit_cpu, _loc_arguments, gamma_ppf

__all__ = ["GammaThreshold"]


class GammaThreshold:
    """Decision threshold from a gamma fit of normal training scores, as the official baseline does.

    fit(train_scores) fits the gamma (all three parameters free by default, as the baseline
    does; loc=0.0 fixes the location) and sets threshold_ = ppf(q). decide(scores) returns 1
    where a score is strictly above threshold_ (a score equal to it is normal), else 0.

    Fallback: with fewer than 3 training scores or constant ones there is nothing to fit, so
    threshold_ is the largest training score (every training score is then judged normal)
    and a GammaFitWarning says so; shape_, loc_ and scale_ are NaN and status_ holds the
    reason (STATUS). NaN/inf training scores raise ValueError, as do scores <= loc when the
    location is fixed.
    """

    def __init__(self, q: float = 0.9, loc: float | None = None):
        self.q = q
        self.loc = loc

    def _check_params(self) -> None:
        if not (isinstance(self.q, (int, float)) and 0.0 < float(self.q) < 1.0):
            raise ValueError(f"q: must be a probability in (0, 1), got {self.q!r}.")
        _loc_arguments(self.loc)

    def fit(self, train_scores) -> "GammaThreshold":
        self._check_params()
        scores = prepare(train_scores, "train_scores", ndim=1, dtype=np.float64, allow_empty=False).numpy()
        fixed, loc_value = _loc_arguments(self.loc)
        fit = _fit_cpu(scores, np.array([0, scores.size], dtype=np.int64), fixed, loc_value)[0]
        if fit.status == 4:
            raise ValueError(f"train_scores: with loc fixed at {loc_value!r} every score must be > loc; "
                             f"the minimum is {float(scores.min())!r}.")
        self.status_ = fit.status
        self.n_train_ = int(scores.size)
        self.shape_, self.loc_, self.scale_, self.loglik_ = fit.shape, fit.loc, fit.scale, fit.loglik
        if fit.ok:
            self.threshold_ = float(gamma_ppf(float(self.q), fit.shape, fit.loc, fit.scale))
        else:
            self.threshold_ = float(scores.max())
            warnings.warn(f"GammaThreshold: cannot fit a gamma to the training scores ({STATUS[fit.status]}); "
                          f"threshold_ falls back to their maximum, {self.threshold_!r}.",
                          GammaFitWarning, stacklevel=2)
        return self

    def decide(self, scores):
        """1 (anomaly) where score > threshold_ strictly, else 0; int64, in the input's kind."""
        if not hasattr(self, "threshold_"):
            raise ValueError("GammaThreshold: call fit(train_scores) before decide().")
        prepared = prepare(scores, "scores", ndim=1, dtype=np.float64)
        if prepared.is_torch:
            return (prepared.data > self.threshold_).to(torch.int64)
        return (prepared.data > self.threshold_).astype(np.int64)

    def to_dict(self) -> dict:
        """JSON-ready state (NaN written as None) for a run directory."""
        if not hasattr(self, "threshold_"):
            raise ValueError("GammaThreshold: call fit(train_scores) before to_dict().")

        def clean(value: float):
            return None if not math.isfinite(value) else float(value)

        return {"q": float(self.q), "loc": self.loc if self.loc is None else float(self.loc),
                "threshold": float(self.threshold_), "shape": clean(self.shape_), "loc_fitted": clean(self.loc_),
                "scale": clean(self.scale_), "loglik": clean(self.loglik_), "status": int(self.status_),
                "n_train": int(self.n_train_)}

    @classmethod
    def from_dict(cls, state: dict) -> "GammaThreshold":
        """Inverse of to_dict."""
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
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"state: not a GammaThreshold.to_dict() result ({error!r}).") from error
        model._check_params()
        return model

    def __repr__(self) -> str:
        return f"GammaThreshold(q={self.q!r}, loc={self.loc!r})"
