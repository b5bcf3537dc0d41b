"""Reference version of asdx.index.Bank (CPU and GPU): the test oracle.

Exact k-nearest neighbours in float64 from direct differences ||q - b|| (no
expansion, so no cancellation), nearest first, equal distances by bank index.
Cosine: 1 - cosine similarity, a zero vector counting as similarity 0 (as the
Bank's normalisation leaves it).
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def pairwise_distances(bank, queries, metric: str = "l2") -> np.ndarray:
    """(n_queries, n_bank) float64 distances: Euclidean for "l2", 1 - cosine similarity for "cosine"."""
    bank = np.asarray(bank, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    if metric == "cosine":
        return 1.0 - _unit(queries) @ _unit(bank).T
    out = np.empty((queries.shape[0], bank.shape[0]))
    for i, q in enumerate(queries):  # one query at a time: (n_bank, dim) differences, not (n_q, n_bank, dim)
        out[i] = np.sqrt(((q - bank) ** 2).sum(axis=1))
    return out


def _nearest(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    indices = np.argsort(distances, axis=1, kind="stable")[:, :k]  # stable: equal distances by index
    return np.take_along_axis(distances, indices, axis=1), indices


def knn(bank, queries, k: int, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (n_queries, k): the k nearest bank members of each query."""
    return _nearest(pairwise_distances(bank, queries, metric), k)


def knn_leave_one_out(bank, k: int, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices), each (n_bank, k): each member's k nearest among the other members."""
    distances = pairwise_distances(bank, bank, metric)
    np.fill_diagonal(distances, np.inf)
    return _nearest(distances, k)
