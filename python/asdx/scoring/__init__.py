"""Scorers over embeddings or reconstruction errors, scikit-learn style.

fit(X, domain=None) returns self; score_samples(X) returns float64 (N,),
higher meaning more anomalous. Scorers know nothing about files or machines.
"""

from asdx.scoring.fusion import mean_fusion, min_fusion, rank_normalize
from asdx.scoring.knn import KNNScorer

__all__ = ["KNNScorer", "mean_fusion", "min_fusion", "rank_normalize"]
