"""NumPy reference Mahalanobis forms (test oracle and benchmark baseline)."""

from __future__ import annotations

import numpy as np


def mahalanobis(queries, means, precisions) -> np.ndarray:
    """(N, K) squared distances, the plain matmul form (((Q − μ) P) ⊙ (Q − μ)) summed over D."""
    q = np.asarray(queries, dtype=np.float64)
    m = np.atleast_2d(np.asarray(means, dtype=np.float64))
    p = np.asarray(precisions, dtype=np.float64).reshape(m.shape[0], m.shape[1], m.shape[1])
    out = np.empty((q.shape[0], m.shape[0]))
    for k in range(m.shape[0]):
        centred = q - m[k]
        out[:, k] = ((centred @ p[k]) * centred).sum(1)
    return out


def mahalanobis_from_covariances(queries, means, covariances) -> np.ndarray:
    """As `mahalanobis`, with precisions from the exact inverse np.linalg.inv(cov)."""
    c = np.asarray(covariances, dtype=np.float64)
    c = c.reshape(-1, c.shape[-1], c.shape[-1])
    return mahalanobis(queries, means, np.stack([np.linalg.inv(ck) for ck in c]))


def ae_mahalanobis_scores(clip_mean_errors, precisions) -> np.ndarray:
    """Official AE baseline ("selective" Mahalanobis): min over k of d̄ᵀ P_k d̄, no mean subtracted, shape (N,)."""
    d = np.asarray(clip_mean_errors, dtype=np.float64)
    p = np.asarray(precisions, dtype=np.float64)
    return np.stack([np.einsum("ni,ij,nj->n", d, pk, d) for pk in p], axis=1).min(1)
