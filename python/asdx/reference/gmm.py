"""NumPy/SciPy reference diagonal-GMM log-likelihood (test oracle)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def gmm_diag_loglik(queries, weights, means, variances) -> np.ndarray:
    """Per-sample log-likelihood (N,): logsumexp_k [log w_k + log N(x; μ_k, diag σ²_k)], direct form."""
    x = np.asarray(queries, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    m = np.asarray(means, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    quadratic = (((x[:, None, :] - m[None]) ** 2) / v[None]).sum(-1)
    log_density = -0.5 * (np.log(2 * np.pi * v).sum(-1)[None] + quadratic)
    with np.errstate(divide="ignore"):
        return logsumexp(log_density + np.log(w)[None], axis=1)
