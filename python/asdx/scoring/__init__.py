"""Anomaly scorers and the gamma decision threshold (official baseline §5)."""

from asdx.scoring.gamma import (
    GammaFit,
    GammaFitBatch,
    GammaFitWarning,
    GammaThreshold,
    fit_gamma,
    fit_gamma_batch,
    gamma_ppf,
)

__all__ = [
    "GammaFit",
    "GammaFitBatch",
    "GammaFitWarning",
    "GammaThreshold",
    "fit_gamma",
    "fit_gamma_batch",
    "gamma_ppf",
]
