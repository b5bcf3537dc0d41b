"""The gamma fit and quantile (asdx.scoring.gamma) in float64 torch ops, one score set at a time.

It follows the NumPy reference of asdx's procedure (asdx.reference.gamma.fit_gamma_asdx) on
the device of the scores:

- free location, the interior maximum of the profile likelihood in u = ln(min(x) - loc): the
  profile on GRID log-spaced gaps from max(1e-6 (max - min), a few ulps of min(x)) to
  1e4 (max - min), a climb from the method-of-moments start (a second one from the first
  rising point above it when the first ends at the bottom, where there is no interior
  maximum), refined by zooming grids;
- the maximum product of spacings fit (Cheng & Amin 1983) where asked or where there is no
  interior maximum: the native kernel's objective (tie groups, each spacing from its accurate
  side) and its Nelder-Mead (scipy's coefficients, two rounds, from the fixed-location MLE with
  loc one spacing below the minimum), the objective evaluated with torch.special.gammainc;
- fixed location: the exact two-parameter MLE.

Statuses, methods and NaN parameters as asdx.scoring.gamma.STATUS / METHODS; loglik is the
log-likelihood at the estimate (Stirling arrangement from shape 1e4 on, as the kernel).
The quantile is a bisection in ln x on the regularised incomplete gamma (the smaller tail).
Slow beside the native kernels (a Python loop over sets; ~10-100 ms a set): a fallback.
"""

from __future__ import annotations

import math

import torch

__all__ = ["fit_sets", "gamma_ppf"]

OK, TOO_FEW, CONSTANT, NON_FINITE, BELOW_LOC, NO_INTERIOR = 0, 1, 2, 3, 4, 5
METHOD_NONE, METHOD_MLE, METHOD_MPS = 0, 1, 2
FIT_METHODS = ("auto", "mle", "mps")
MIN_SCORES = 3
BOTTOM_GAP, TOP_GAP = 1e-6, 1e4
GRID = 2001
ZOOM_POINTS, ZOOM_ROUNDS = 41, 8
MAX_SPACINGS_SHAPE = 1e7
STIRLING_SHAPE = 1e4
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_PROFILE_VALUES = 1 << 22  # gaps x scores per profile chunk
_F64 = torch.float64


def _log_minus_digamma(a: torch.Tensor) -> torch.Tensor:
    """ln a - digamma(a) (> 0, decreasing), with full relative precision for huge a (~1/(2a))."""
    r = 1.0 / a.clamp(min=10.0)
    r2 = r * r
    series = 0.5 * r + r2 * (1 / 12 - r2 * (1 / 120 - r2 * (1 / 252 - r2 * (1 / 240 - r2 / 132))))
    small = a.clamp(max=10.0)
    return torch.where(a >= 10.0, series, torch.log(small) - torch.digamma(small))


def _stirling_remainder(a: torch.Tensor) -> torch.Tensor:
    """lgamma(a) - [(a - 1/2) ln a - a + ln sqrt(2 pi)] (DLMF 5.11.1 series from a = 10)."""
    r = 1.0 / a.clamp(min=10.0)
    series = r / 12 - r**3 / 360 + r**5 / 1260 - r**7 / 1680 + r**9 / 1188
    small = a.clamp(max=10.0)
    direct = torch.lgamma(small) - ((small - 0.5) * torch.log(small) - small + HALF_LOG_2PI)
    return torch.where(a >= 10.0, series, direct)


def _log1pmx(u: torch.Tensor) -> torch.Tensor:
    """log1p(u) - u without cancellation for small |u| (u > -1): the atanh series as the kernel's."""
    s = u / (2.0 + u)
    s2 = s * s
    total = torch.zeros_like(u)
    power = s * s2
    for k in range(1, 40):
        total = total + power / (2 * k + 1)
        power = power * s2
    series = -s * u + 2.0 * total
    return torch.where(u.abs() < 0.5, series, torch.log1p(u) - u)


def _log_minus_digamma_slope(a: torch.Tensor) -> torch.Tensor:
    """a g'(a) = 1 - a trigamma(a) (< 0), the slope of g in ln a; the series above a = 10, as g's."""
    r = 1.0 / a.clamp(min=10.0)
    r2 = r * r
    series = -(0.5 * r + r2 * (1 / 6 - r2 * (1 / 30 - r2 / 42)))
    small = a.clamp(max=10.0)
    return torch.where(a >= 10.0, series, 1.0 - small * torch.polygamma(1, small))


def solve_shape(c: torch.Tensor) -> torch.Tensor:
    """a with ln a - digamma(a) = c (c > 0), element-wise: Minka's start (within ~1.5 %), then Newton in
    ln a (g is convex and decreasing in ln a, so Newton from the start converges monotonically)."""
    a = (3.0 - c + torch.sqrt((c - 3.0).square() + 24.0 * c)) / (12.0 * c)
    w = torch.log(a)
    for _ in range(12):
        a = torch.exp(w)
        w = w - (_log_minus_digamma(a) - c) / _log_minus_digamma_slope(a)
    return torch.exp(w)


def _loglik(x: torch.Tensor, a: float, loc: float, scale: float) -> float:
    """Sum of the gamma log-pdf at the estimate (the native kernel's arrangement)."""
    z = (x - loc) / scale
    if a < STIRLING_SHAPE:
        terms = (a - 1.0) * torch.log(z) - z
        return float(terms.sum()) + x.numel() * (-math.lgamma(a) - math.log(scale))
    at = torch.tensor(a, dtype=_F64, device=x.device)
    remainder = float(_stirling_remainder(at))
    terms = a * _log1pmx((z - a) / a) - torch.log(z)
    return float(terms.sum()) + x.numel() * (0.5 * math.log(a) - HALF_LOG_2PI - remainder - math.log(scale))


def _shape_statistic(y: torch.Tensor, d: torch.Tensor, ybar: torch.Tensor) -> torch.Tensor:
    """mean(d - ln(1 + d)) = ln ybar - mean ln y over the last axis, as the native kernel forms it: ln(1 + d) as
    log1p(d) for small |d|, else as ln(y / ybar), which stays exact when y << ybar (a score near loc)."""
    w = y / ybar.unsqueeze(-1)
    return (d - torch.where(d.abs() < 0.01, torch.log1p(d), torch.log(w))).mean(dim=-1)


def _profile(x: torch.Tensor, gaps: torch.Tensor):
    """(shape, scale, loglik) of the fixed-location MLE at loc = min(x) - gap for each gap (reference's form)."""
    n = x.numel()
    shifted, centred = x - x.min(), x - x.mean()
    shapes, scales, logliks = [], [], []
    step = max(1, _PROFILE_VALUES // n)
    for start in range(0, gaps.numel(), step):
        g = gaps[start:start + step]
        y = shifted[None, :] + g[:, None]
        ybar = (x.mean() - x.min()) + g
        d = centred[None, :] / ybar[:, None]
        c = _shape_statistic(y, d, ybar)
        a = solve_shape(c)
        shapes.append(a)
        scales.append(ybar / a)
        logliks.append(n * (0.5 * torch.log(a) - HALF_LOG_2PI - _stirling_remainder(a) - (a - 1.0) * c
                            - torch.log(ybar)))
    return torch.cat(shapes), torch.cat(scales), torch.cat(logliks)


def _interior_mle(x: torch.Tensor, x_min: float, spread: float):
    """(shape, loc, scale) of the interior maximum uphill from the moment start, or None."""
    resolvable = 4.0 * (x_min - math.nextafter(x_min, -math.inf))
    u_top = math.log(TOP_GAP * spread)
    u_bottom = min(u_top, max(math.log(BOTTOM_GAP * spread), math.log(resolvable) if resolvable > 0 else -math.inf))
    u = torch.linspace(u_bottom, u_top, GRID, dtype=_F64, device=x.device)
    loglik = _profile(x, torch.exp(u))[2].cpu().tolist()
    centred = x - x.mean()
    m2, m3 = float(centred.square().mean()), float((centred**3).mean())
    if m3 > 0.0:
        start_gap = 2.0 / (m3 / m2**1.5) * math.sqrt(m2) - (float(x.mean()) - x_min)
        if start_gap <= 0:
            start = 0
        else:
            start = int(min(max(torch.searchsorted(u, torch.tensor([math.log(start_gap)], dtype=_F64,
                                                                    device=x.device)).item(), 0), GRID - 1))
    else:
        start = GRID - 1

    def climb(i: int) -> int:
        while True:
            left = loglik[i - 1] if i > 0 else -math.inf
            right = loglik[i + 1] if i < GRID - 1 else -math.inf
            if max(left, right) <= loglik[i]:
                return i
            i = i - 1 if left > right else i + 1

    top = climb(start)
    if top == 0:
        rising = next((i for i in range(start, GRID - 1) if loglik[i + 1] > loglik[i]), None)
        if rising is None:
            return None
        top = rising + 1
        while top < GRID - 1 and loglik[top + 1] > loglik[top]:
            top += 1
    if top < GRID - 1:
        lo, hi = float(u[top - 1]), float(u[top + 1])
        best = float(u[top])
        for _ in range(ZOOM_ROUNDS):
            grid = torch.linspace(lo, hi, ZOOM_POINTS, dtype=_F64, device=x.device)
            i = int(torch.argmax(_profile(x, torch.exp(grid))[2]))
            best = float(grid[i])
            lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, ZOOM_POINTS - 1)])
        gap = math.exp(best)
    else:
        gap = math.exp(float(u[-1]))
    a, scale, _ = _profile(x, torch.tensor([gap], dtype=_F64, device=x.device))
    return float(a[0]), x_min - gap, float(scale[0])


def _fit_fixed(x: torch.Tensor, loc: float) -> tuple[int, float, float]:
    """(status, shape, scale) of the MLE with the location fixed (x finite, >= 3 scores)."""
    if not float(x.min()) > loc:
        return BELOW_LOC, math.nan, math.nan
    if float(x.min()) == float(x.max()):
        return CONSTANT, math.nan, math.nan
    xbar = x.mean()
    ybar = xbar - loc
    c = _shape_statistic(x - loc, (x - xbar) / ybar, ybar)
    if not float(c) > 0.0:
        return CONSTANT, math.nan, math.nan
    a = float(solve_shape(c.reshape(1))[0])
    return OK, a, float(ybar) / a


def _nelder_mead(f, start: list[float], xatol: float, fatol: float, max_evaluations: int) -> list[float]:
    """scipy's Nelder-Mead as the native kernel runs it (csrc/cpu/gamma.cpp)."""
    dim = len(start)
    simplex = [list(start)]
    for j in range(dim):
        vertex = list(start)
        vertex[j] = 1.05 * start[j] if start[j] != 0.0 else 0.00025
        simplex.append(vertex)
    values = [f(v) for v in simplex]
    evaluations = dim + 1

    def order():
        index = sorted(range(dim + 1), key=lambda i: values[i])  # stable, as std::stable_sort
        simplex[:] = [simplex[i] for i in index]
        values[:] = [values[i] for i in index]

    def point(centre, t):
        return [centre[j] + t * (simplex[dim][j] - centre[j]) for j in range(dim)]

    order()
    while evaluations < max_evaluations:
        x_spread = max(abs(simplex[i][j] - simplex[0][j]) for i in range(1, dim + 1) for j in range(dim))
        f_spread = max(abs(values[i] - values[0]) for i in range(1, dim + 1))
        if x_spread <= xatol and f_spread <= fatol:
            break
        centre = [sum(simplex[i][j] for i in range(dim)) / dim for j in range(dim)]
        reflected = point(centre, -1.0)
        f_reflected = f(reflected)
        evaluations += 1
        shrink = False
        if f_reflected < values[0]:
            expanded = point(centre, -2.0)
            f_expanded = f(expanded)
            evaluations += 1
            simplex[dim], values[dim] = (expanded, f_expanded) if f_expanded < f_reflected else (reflected,
                                                                                                 f_reflected)
        elif f_reflected < values[dim - 1]:
            simplex[dim], values[dim] = reflected, f_reflected
        elif f_reflected < values[dim]:
            contracted = point(centre, -0.5)
            f_contracted = f(contracted)
            evaluations += 1
            if f_contracted <= f_reflected:
                simplex[dim], values[dim] = contracted, f_contracted
            else:
                shrink = True
        else:
            contracted = point(centre, 0.5)
            f_contracted = f(contracted)
            evaluations += 1
            if f_contracted < values[dim]:
                simplex[dim], values[dim] = contracted, f_contracted
            else:
                shrink = True
        if shrink:
            for i in range(1, dim + 1):
                simplex[i] = [simplex[0][j] + 0.5 * (simplex[i][j] - simplex[0][j]) for j in range(dim)]
                values[i] = f(simplex[i])
                evaluations += 1
        order()
    return simplex[0]


def _fit_spacings(x: torch.Tensor):
    """(status, shape, loc, scale) of the maximum product of spacings fit (x finite, >= 3, not constant)."""
    distinct, counts = torch.unique_consecutive(torch.sort(x).values, return_counts=True)
    if distinct.numel() < 3:
        return NO_INTERIOR, math.nan, math.nan, math.nan
    low = float(distinct[0])
    above_min = distinct - distinct[0]
    spread = float(above_min[-1])
    smallest_gap = 4.0 * (low - math.nextafter(low, -math.inf))
    first_gap = max(float(above_min[1]), smallest_gap)
    weights = torch.cat([counts.to(_F64), torch.ones(1, dtype=_F64, device=x.device)])
    one = torch.ones(1, dtype=_F64, device=x.device)
    zero = torch.zeros(1, dtype=_F64, device=x.device)

    def negative(theta: list[float]) -> float:
        try:
            a, gap, scale = math.exp(theta[0]), spread * math.exp(theta[1]), spread * math.exp(theta[2])
        except OverflowError:
            return math.inf
        if not (a <= MAX_SPACINGS_SHAPE and smallest_gap <= gap <= TOP_GAP * spread and 0.0 < scale < math.inf):
            return math.inf
        shape = torch.tensor(a, dtype=_F64, device=x.device)
        z = (above_min + gap) / scale
        p = torch.cat([torch.special.gammainc(shape, z), one])
        q = torch.cat([torch.special.gammaincc(shape, z), zero])
        p_prev, q_prev = torch.cat([zero, p[:-1]]), torch.cat([one, q[:-1]])
        spacing = torch.where(p <= 0.5, p - p_prev, q_prev - q)  # each from the side where both ends are small
        if not bool((spacing > 0.0).all()):
            return math.inf
        return -float((weights * torch.log(spacing)).sum())

    status, a0, scale0 = _fit_fixed(x, low - first_gap)
    if not (status == OK and a0 > 0.0 and scale0 > 0.0 and a0 <= MAX_SPACINGS_SHAPE):
        a0, scale0 = 1.0, spread
    theta = [math.log(a0), math.log(first_gap / spread), math.log(scale0 / spread)]
    for _ in range(2):
        theta = _nelder_mead(negative, theta, 1e-8, 1e-10, 4000)
    if not math.isfinite(negative(theta)):
        return NO_INTERIOR, math.nan, math.nan, math.nan
    return OK, math.exp(theta[0]), low - spread * math.exp(theta[1]), spread * math.exp(theta[2])


def _fit_one(x: torch.Tensor, fixed: bool, loc: float, method: str, min_mle_scores: int):
    """(shape, loc, scale, loglik, status, method) of one set."""
    nan4 = (math.nan, math.nan, math.nan, math.nan)
    if not bool(torch.isfinite(x).all()):
        return (*nan4, NON_FINITE, METHOD_NONE)
    if x.numel() < MIN_SCORES:
        return (*nan4, TOO_FEW, METHOD_NONE)
    if fixed:
        status, a, scale = _fit_fixed(x, loc)
        if status != OK:
            return (*nan4, status, METHOD_NONE)
        return a, loc, scale, _loglik(x, a, loc, scale), OK, METHOD_MLE
    x_min, x_max = float(x.min()), float(x.max())
    if x_min == x_max:
        return (*nan4, CONSTANT, METHOD_NONE)
    spacings = method == "mps" or (method == "auto" and x.numel() < min_mle_scores)
    if not spacings:
        found = _interior_mle(x, x_min, x_max - x_min)
        if found is not None and math.isfinite(found[0]) and found[0] > 0.0:
            a, fitted_loc, scale = found
            return a, fitted_loc, scale, _loglik(x, a, fitted_loc, scale), OK, METHOD_MLE
        if method == "mle":
            return (*nan4, NO_INTERIOR, METHOD_NONE)
    status, a, fitted_loc, scale = _fit_spacings(x)
    if status != OK:
        return (*nan4, status, METHOD_NONE)
    return a, fitted_loc, scale, _loglik(x, a, fitted_loc, scale), OK, METHOD_MPS


def fit_sets(values: torch.Tensor, offsets, fixed: bool, loc: float, method: str, min_mle_scores: int):
    """Fits the sets values[offsets[s]:offsets[s + 1]] (values float64 1-D on any device; offsets int64,
    host or device). Returns (shape, loc, scale, loglik float64, status int32, method int8) tensors on
    values' device, as the native kernels."""
    if method not in FIT_METHODS:
        raise ValueError(f"method: must be one of {', '.join(map(repr, FIT_METHODS))}, got {method!r}.")
    values = torch.as_tensor(values).to(_F64)
    bounds = [int(v) for v in torch.as_tensor(offsets).cpu().tolist()]
    rows = [_fit_one(values[bounds[s]:bounds[s + 1]], fixed, float(loc), method, int(min_mle_scores))
            for s in range(len(bounds) - 1)]
    columns = list(zip(*rows)) if rows else [()] * 6
    device = values.device
    floats = [torch.tensor(list(c), dtype=_F64, device=device) for c in columns[:4]]
    return (*floats, torch.tensor(list(columns[4]), dtype=torch.int32, device=device),
            torch.tensor(list(columns[5]), dtype=torch.int8, device=device))


def gamma_ppf(q: torch.Tensor, shape: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """loc + scale * P^{-1}(shape, q) element-wise (float64 tensors of one shape and device; validated by the
    caller): 0 at q = 0, inf at q = 1."""
    q, shape = q.to(_F64), shape.to(_F64)
    upper = 1.0 - q
    lower = q <= upper
    target = torch.where(lower, q, upper)
    lo = torch.full_like(q, -740.0)
    hi = torch.full_like(q, 700.0)
    for _ in range(120):
        mid = 0.5 * (lo + hi)
        x = torch.exp(mid)
        value = torch.where(lower, torch.special.gammainc(shape, x), torch.special.gammaincc(shape, x))
        below = torch.where(lower, value < target, value > target)  # the root lies above mid
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    x = torch.exp(0.5 * (lo + hi))
    # q == 0, or a root below exp(-740) (subnormal: it rounds to 0, as scipy's)
    x = torch.where((q == 0.0) | (hi <= -740.0 + 1e-9), torch.zeros_like(x), x)
    x = torch.where(upper == 0.0, torch.full_like(x, math.inf), x)
    return loc.to(_F64) + scale.to(_F64) * x
