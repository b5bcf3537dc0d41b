"""Diagonal-covariance GMM log-likelihood in torch.

As the native kernel (asdx.scoring.gmm): the direct form (x − μ)² / σ² per component in the
queries' dtype (means and 1/σ² rounded to it), summed and combined with a max-shifted
log-sum-exp in float64; log-normalisers from the variances in float64. Zero weights (log
weight −inf) drop their component.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gmm_diag_loglik"]

_BLOCK_VALUES = 1 << 24


def gmm_diag_loglik(queries: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor,
                    variances: torch.Tensor) -> torch.Tensor:
    """(N,) float64 log-likelihoods of queries (N, D) under weights exp(log_weights) (K,), means (K, D) and
    variances (K, D) > 0; all on one device. N = 0 gives an empty tensor."""
    dtype, device = queries.dtype, queries.device
    log_weights = log_weights.to(device=device, dtype=torch.float64)
    means = means.to(device=device, dtype=dtype)
    precisions = (1.0 / variances.to(device=device, dtype=dtype))
    variances64 = variances.to(device=device, dtype=torch.float64)
    constants = log_weights - 0.5 * (torch.log(2.0 * math.pi * variances64).sum(dim=1))  # (K,)
    n, d = queries.shape
    k = means.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=device)
    rows = max(1, _BLOCK_VALUES // max(d, 1))
    for start in range(0, n, rows):
        block = queries[start:start + rows]
        terms = torch.empty((block.shape[0], k), dtype=torch.float64, device=device)
        for c in range(k):
            quadratic = ((block - means[c]).square() * precisions[c]).to(torch.float64).sum(dim=1)
            terms[:, c] = constants[c] - 0.5 * quadratic
        out[start:start + rows] = torch.logsumexp(terms, dim=1)
    return out
