"""Gamma-family special functions from asdx's C++ kernels (header csrc/include/asdx/gamma.h).

The same digamma, trigamma, regularised incomplete gamma and inverse that the gamma fit runs
in C++ and CUDA, exposed for the tests (against scipy.special) and for users.
"""

from __future__ import annotations

import numpy as np

from asdx._native import _C, follow_torch_threads

__all__ = ["digamma", "gamma_logpdf", "gammainc", "gammaincc", "gammainccinv", "gammaincinv", "trigamma"]


def _special(name: str, a, x=None, loc=None, scale=None) -> np.ndarray:
    arrays = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64) for v in
                                   (a, 0.0 if x is None else x, 0.0 if loc is None else loc,
                                    1.0 if scale is None else scale)])
    shape = arrays[0].shape
    flat = [np.ascontiguousarray(v).reshape(-1) for v in arrays]
    follow_torch_threads()
    out = _C.gamma_special_cpu(name, *flat).reshape(shape)
    return float(out) if out.ndim == 0 else out


def digamma(x):
    """psi(x) for x > 0 (NaN elsewhere), as scipy.special.digamma on that domain."""
    return _special("digamma", x)


def trigamma(x):
    """psi_1(x) for x > 0 (NaN elsewhere), as scipy.special.polygamma(1, x)."""
    return _special("trigamma", x)


def gammainc(a, x):
    """Regularised lower incomplete gamma P(a, x), a > 0, x >= 0 (NaN elsewhere)."""
    return _special("gammainc", a, x)


def gammaincc(a, x):
    """Regularised upper incomplete gamma Q(a, x) = 1 - P(a, x)."""
    return _special("gammaincc", a, x)


def gammaincinv(a, p):
    """x with P(a, x) = p, p in [0, 1]."""
    return _special("gammaincinv", a, p)


def gammainccinv(a, q):
    """x with Q(a, x) = q, q in [0, 1]."""
    return _special("gammainccinv", a, q)


def gamma_logpdf(x, shape, loc=0.0, scale=1.0):
    """log pdf of Gamma(shape, loc, scale), as scipy.stats.gamma.logpdf."""
    return _special("logpdf", shape, x, loc, scale)
