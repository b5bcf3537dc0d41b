"""Scorers over embeddings or reconstruction errors, scikit-learn style, and the gamma threshold.

fit(X, y=None, *, domain=None) returns self (y is ignored, scikit-learn's convention, so the
scorers work in a Pipeline: `pipeline.fit(X, knnscorer__domain=labels)`; they pass
sklearn.utils.estimator_checks, see docs/estimator_checks.md); score_samples(X) returns float64 (N,),
higher meaning more anomalous (the DCASE sign, the opposite of scikit-learn's outlier
detectors); train_scores_ holds honest scores of the training rows (kNN and Mahalanobis:
leave-one-out, GMM: out-of-fold), in the same sign. Scorers know nothing about files or machines.
"""

from asdx.scoring.band_memory import BandMemoryScorer
from asdx.scoring.fusion import mean_fusion, min_fusion, rank_normalize
from asdx.scoring.gamma import GammaFit, GammaFitBatch, GammaFitWarning, fit_gamma, fit_gamma_batch, gamma_ppf
from asdx.scoring.gmm import DiagGMMScorer, gmm_diag_loglik
from asdx.scoring.knn import KNNScorer
from asdx.scoring.threshold import GammaThreshold
from asdx.scoring.covariance import covariance, stable_precision
from asdx.scoring.mahalanobis import MahalanobisScorer, ae_mahalanobis_scores, mahalanobis

__all__ = [
    "BandMemoryScorer",
    "DiagGMMScorer",
    "GammaFit",
    "GammaFitBatch",
    "GammaFitWarning",
    "GammaThreshold",
    "KNNScorer",
    "MahalanobisScorer",
    "ae_mahalanobis_scores",
    "covariance",
    "fit_gamma",
    "fit_gamma_batch",
    "gamma_ppf",
    "gmm_diag_loglik",
    "mahalanobis",
    "mean_fusion",
    "min_fusion",
    "rank_normalize",
    "stable_precision",
]
