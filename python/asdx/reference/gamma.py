"""Reference versions of asdx.scoring.gamma: the test oracle and the benchmark baseline.

fit_gamma is scipy.stats.gamma.fit (Nelder-Mead from scipy's moment start, as the official
baseline calls it); with floc it is scipy's exact two-parameter MLE.

fit_gamma_asdx is asdx's procedure written plainly in NumPy/SciPy (slow, for the tests): the
interior local maximum of the likelihood reached uphill from the moment start, found on a
dense grid of the profile in loc and refined, or, where the profile rises all the way to
the boundary, the maximum product of spacings fit (fit_gamma_mps, by Powell's method
rather than the kernel's Nelder-Mead).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize as optimize
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


# ----------------------------------------------------------------------------- asdx's procedure

BOTTOM_GAP, TOP_GAP = 1e-6, 1e4  # the profile's range, as gap / (max - min)
GRID = 2001  # profile points per search; about 120 per decade
MIN_MLE_SCORES = 20  # fewer scores: the spacings fit (asdx.scoring.gamma.MIN_MLE_SCORES)


def solve_shape(c):
    """a with ln a - digamma(a) = c (c > 0), element-wise: bisection in ln a (the left side decreases)."""
    c = np.asarray(c, dtype=np.float64)
    lo, hi = np.full(c.shape, -40.0), np.full(c.shape, 40.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        a = np.exp(mid)
        too_small = np.log(a) - special.digamma(a) > c  # g(a) > c: a must grow
        lo, hi = np.where(too_small, mid, lo), np.where(too_small, hi, mid)
    return np.exp(0.5 * (lo + hi))


def _stirling_remainder(a):
    """lgamma(a) - [(a - 1/2) ln a - a + ln sqrt(2 pi)] (DLMF 5.11.1 series above a = 10)."""
    a = np.asarray(a, dtype=np.float64)
    r = 1.0 / np.maximum(a, 10.0)
    series = r / 12 - r**3 / 360 + r**5 / 1260 - r**7 / 1680 + r**9 / 1188
    direct = special.gammaln(np.minimum(a, 10.0)) - ((np.minimum(a, 10.0) - 0.5) * np.log(np.minimum(a, 10.0))
                                                      - np.minimum(a, 10.0) + 0.5 * math.log(2 * math.pi))
    return np.where(a >= 10.0, series, direct)


def profile(x, gaps):
    """(shape, scale, loglik) of the fixed-location MLE at loc = min(x) - gap, for each gap.

    With scale = mean(y) / a the log-likelihood is n [a ln a - a - lgamma(a) - (a - 1) c - ln mean(y)],
    c = ln mean(y) - mean(ln y); it is written with the Stirling remainder and c = mean(d - log1p(d)),
    d = y / mean(y) - 1, so that it keeps its precision at huge shapes (large gaps).
    """
    x = np.asarray(x, dtype=np.float64)
    gaps = np.atleast_1d(np.asarray(gaps, dtype=np.float64))
    y = (x - x.min())[None, :] + gaps[:, None]
    ybar = y.mean(axis=1)
    d = (x - x.mean())[None, :] / ybar[:, None]
    c = (d - np.log1p(d)).mean(axis=1)
    a = solve_shape(c)
    loglik = x.size * (0.5 * np.log(a) - 0.5 * math.log(2 * math.pi) - _stirling_remainder(a) - (a - 1) * c
                       - np.log(ybar))
    return a, ybar / a, loglik


def moment_start_gap(x):
    """min(x) - loc of the method of moments (shape 4 / skewness^2); None when skewness <= 0."""
    x = np.asarray(x, dtype=np.float64)
    skew = stats.skew(x)
    if not skew > 0:
        return None
    return 2.0 / skew * x.std() - (x.mean() - x.min())


def interior_mle(x):
    """(shape, loc, scale) of the interior local maximum uphill from the moment start, or None.

    The profile is evaluated on GRID gaps log-spaced over [BOTTOM_GAP, TOP_GAP] (max - min).
    From the grid point nearest the moment start, step to the higher neighbour until neither
    is higher; when that ends at the bottom, start again from the first point above the start
    where the profile rises. A grid maximum at the bottom is no interior maximum (None); one
    at the top is the normal limit. A maximum inside is refined by a bounded scalar search.
    """
    x = np.asarray(x, dtype=np.float64)
    spread = x.max() - x.min()
    u = np.linspace(math.log(BOTTOM_GAP * spread), math.log(TOP_GAP * spread), GRID)
    loglik = profile(x, np.exp(u))[2]
    start_gap = moment_start_gap(x)
    if start_gap is None:
        start = GRID - 1
    elif start_gap <= 0:
        start = 0
    else:
        start = int(np.clip(np.searchsorted(u, math.log(start_gap)), 0, GRID - 1))

    def climb(i):
        while True:
            left = loglik[i - 1] if i > 0 else -np.inf
            right = loglik[i + 1] if i < GRID - 1 else -np.inf
            if max(left, right) <= loglik[i]:
                return i
            i = i - 1 if left > right else i + 1

    top = climb(start)
    if top == 0:
        rising = [i for i in range(start, GRID - 1) if loglik[i + 1] > loglik[i]]
        if not rising:
            return None
        top = rising[0] + 1  # up the rising stretch to its top
        while top < GRID - 1 and loglik[top + 1] > loglik[top]:
            top += 1
    if top < GRID - 1:
        best = optimize.minimize_scalar(lambda v: -profile(x, math.exp(v))[2][0], bounds=(u[top - 1], u[top + 1]),
                                        method="bounded", options={"xatol": 1e-10})
        gap = math.exp(best.x)
    else:
        gap = math.exp(u[-1])
    a, scale, _ = profile(x, gap)
    return float(a[0]), float(x.min() - gap), float(scale[0])


def _spacings_objective(x):
    """(distinct scores, their weights) -> f(shape, loc, scale) = the spacings objective."""
    distinct, counts = np.unique(np.asarray(x, dtype=np.float64), return_counts=True)
    weights = np.append(counts, 1)

    def objective(shape, loc, scale):
        if not (shape > 0 and scale > 0 and loc < distinct[0]):
            return -np.inf
        z = (distinct - loc) / scale
        cdf = np.concatenate([[0.0], special.gammainc(shape, z), [1.0]])
        sf = np.concatenate([[1.0], special.gammaincc(shape, z), [0.0]])
        spacings = np.where(cdf[1:] <= 0.5, np.diff(cdf), -np.diff(sf))  # each from its accurate side
        if not np.all(spacings > 0):
            return -np.inf
        return float(weights @ np.log(spacings))

    return distinct, objective


def log_spacings(x, shape, loc, scale):
    """The spacings objective sum_i w_i ln(F(u_i) - F(u_(i-1))) over the distinct scores u_1 < ... < u_k
    (F(u_0) = 0, F(u_(k+1)) = 1); w_i is u_i's multiplicity, 1 for the top spacing."""
    return _spacings_objective(x)[1](shape, loc, scale)


def fit_gamma_mps(x):
    """(shape, loc, scale) maximising log_spacings (Cheng & Amin 1983) by Powell's method from the
    two-parameter MLE with loc one spacing below the minimum; None with < 3 distinct scores."""
    x = np.asarray(x, dtype=np.float64)
    distinct, objective = _spacings_objective(x)
    if distinct.size < 3:
        return None
    low, spread = distinct[0], distinct[-1] - distinct[0]

    def negative(theta):
        a, gap, scale = math.exp(theta[0]), spread * math.exp(theta[1]), spread * math.exp(theta[2])
        if not (a <= 1e7 and gap <= TOP_GAP * spread):
            return np.inf
        return -objective(a, low - gap, scale)

    gap0 = distinct[1] - low
    a0, _, scale0 = stats.gamma.fit(x, floc=low - gap0)
    theta = np.array([math.log(a0), math.log(gap0 / spread), math.log(scale0 / spread)])
    with np.errstate(invalid="ignore"):  # Powell's line search meets the infinite walls of the domain
        for _ in range(2):
            theta = optimize.minimize(negative, theta, method="Powell", options={"xtol": 1e-9, "ftol": 1e-12}).x
    return math.exp(theta[0]), float(low - spread * math.exp(theta[1])), spread * math.exp(theta[2])


def fit_gamma_asdx(x, method="auto"):
    """(shape, loc, scale, method) of asdx's free-location fit (asdx.scoring.gamma.fit_gamma's
    `method`): "auto" takes interior_mle's maximum from MIN_MLE_SCORES scores on, else the
    spacings fit; "mle" only the former. (nan, nan, nan, "none") when there is no fit."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 3 or x.min() == x.max():
        return math.nan, math.nan, math.nan, "none"
    if method == "mle" or (method == "auto" and x.size >= MIN_MLE_SCORES):
        mle = interior_mle(x)
        if mle is not None:
            return (*mle, "mle")
        if method == "mle":
            return math.nan, math.nan, math.nan, "none"
    mps = fit_gamma_mps(x)
    if mps is None:
        return math.nan, math.nan, math.nan, "none"
    return (*mps, "mps")


def conformal_quantile(x, q):
    """The ceil((n + 1) q)-th smallest of n scores, the largest when that rank exceeds n."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    rank = math.ceil((x.size + 1) * q)
    return float(x[min(rank, x.size) - 1])
