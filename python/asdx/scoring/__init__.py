"""Scorers over embeddings or reconstruction errors (scikit-learn style)."""

from asdx.scoring.gmm import DiagGMMScorer, gmm_diag_loglik
from asdx.scoring.mahalanobis import (
    MahalanobisScorer,
    ae_mahalanobis_scores,
    covariance,
    mahalanobis,
    stable_precision,
)

__all__ = [
    "DiagGMMScorer",
    "MahalanobisScorer",
    "ae_mahalanobis_scores",
    "covariance",
    "gmm_diag_loglik",
    "mahalanobis",
    "stable_precision",
]
