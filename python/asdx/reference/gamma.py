"""SciPy versions of asdx.scoring.gamma: the test oracle and the benchmark baseline.

fit is scipy.stats.gamma.fit (Nelder-Mead from scipy's moment start, as the official
baseline calls it); with floc it is scipy's exact two-parameter MLE.
"""

from __future__ import annotations

import numpy as np
import scipy.special as special
import scipy.stats as stats


def fit_gamma(scores, loc: float | None = None) -> tuple[float, float, float]:
    """(shape, loc, scale) from scipy.stats.gamma.fit(scores) (floc=loc when given)."""
    x = np.asarray(scores, dtype=np.float64)
    if loc is None:
        return tuple(float(v) for v in stats.gamma.fit(x))
    return tuple(float(v) for v in stats.gamma.fit(x, floc=loc))


def fit_gamma_batch(score_sets, loc: float | None = None) -> np.ndarray:
    """(n_sets, 3) parameters, scipy looped over the sets."""
    return np.array([fit_gamma(s, loc) for s in score_sets], dtype=np.float64).reshape(-1, 3)


def gamma_loglik(scores, shape: float, loc: float, scale: float) -> float:
    """Total log-likelihood of the scores under Gamma(shape, loc, scale)."""
    return float(stats.gamma.logpdf(np.asarray(scores, dtype=np.float64), shape, loc, scale).sum())


def gamma_ppf(q, shape, loc, scale):
    return stats.gamma.ppf(q, shape, loc, scale)


def gamma_logpdf(x, shape, loc=0.0, scale=1.0):
    return stats.gamma.logpdf(x, shape, loc, scale)


def digamma(x):
    return special.digamma(x)


def trigamma(x):
    return special.polygamma(1, x)


def gammainc(a, x):
    return special.gammainc(a, x)


def gammaincc(a, x):
    return special.gammaincc(a, x)


def gammaincinv(a, p):
    return special.gammaincinv(a, p)


def gammainccinv(a, q):
    return special.gammainccinv(a, q)


def gamma_threshold(train_scores, q: float = 0.9) -> float:
    """The official baseline's threshold: gamma.ppf(q, *gamma.fit(train_scores))."""
    return float(stats.gamma.ppf(q, *stats.gamma.fit(np.asarray(train_scores, dtype=np.float64))))
