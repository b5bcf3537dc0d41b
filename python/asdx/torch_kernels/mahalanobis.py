"""Squared Mahalanobis distances in torch, from the Cholesky factors of the precisions.

As the native kernel (asdx.scoring.mahalanobis): with P = L Lᵀ, d(q) = ||Lᵀ (q − μ)||², the
product in the queries' dtype (means and factors are rounded to it), the sum of squares in
float64, the result in the queries' dtype. Queries are cut into row blocks so that the
intermediate (rows, D) product stays small.
"""

from __future__ import annotations

import torch

__all__ = ["mahalanobis_factored"]

_BLOCK_VALUES = 1 << 24


def mahalanobis_factored(queries: torch.Tensor, means: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(N, K) squared distances of queries (N, D) to K means (K, D) under precisions L_k L_kᵀ, factors (K, D, D)
    lower triangular; all on one device. N = 0 gives (0, K)."""
    dtype = queries.dtype
    means = means.to(device=queries.device, dtype=dtype)
    factors = factors.to(device=queries.device, dtype=dtype)
    n, d = queries.shape
    k = means.shape[0]
    out = torch.empty((n, k), dtype=dtype, device=queries.device)
    rows = max(1, _BLOCK_VALUES // max(d, 1))
    for start in range(0, n, rows):
        block = queries[start:start + rows]
        for c in range(k):
            projected = (block - means[c]) @ factors[c]  # row form of Lᵀ (q − μ)
            out[start:start + rows, c] = projected.to(torch.float64).square().sum(dim=1).to(dtype)
    return out
