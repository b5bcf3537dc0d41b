"""Calibration of the gamma threshold: which estimate puts the 0.9 quantile where 10 % of fresh scores exceed it?

For score sets drawn from known distributions, each candidate threshold t is scored by its
exceedance P(X > t) under the distribution the set came from: the fraction of fresh normal
scores it would flag (goal 1 - q = 0.10). Candidates:

  - asdx: GammaThreshold as shipped (method "auto": interior MLE from MIN_MLE_SCORES scores on,
    else maximum product of spacings; conformal where no gamma can be fitted);
  - mle: the interior likelihood maximum alone (fit_gamma(method="mle"); sets without one are
    what the fallback must handle);
  - scipy: scipy.stats.gamma.fit, what the official baseline (nttcslab/dcase2023_task2_baseline_ae)
    calls; on J-shaped sets it ends near the likelihood's boundary spike;
  - old: asdx before the fix, the better likelihood of the interior maximum and the boundary
    (loc = the largest double below min(scores)), i.e. usually the spike;
  - the fallback candidates: mps (maximum product of spacings, Cheng & Amin 1983), fixed (the
    two-parameter MLE with loc one spacing below the minimum), moments (method of moments),
    empirical (numpy's linear-interpolation quantile) and conformal (the ceil((n + 1) q)-th
    smallest score).

Distributions: gamma with shape 0.3 ... 20, uniform, normal (negative scores, as z-scored sets
are), lognormal, Lomax (Pareto II), and two score-like J shapes: gamma(0.4) + normal noise
(sd 0.05) and a tight cluster of 60 % near-equal low scores with an exponential tail. Their
exceedances are exact (scipy's survival functions) or, for the last two, from 2e6 draws.

Tables: mean exceedance / root-mean-square distance to 0.10 / fraction of sets above 0.30,
(1) over the sets where the likelihood has no interior maximum, per fallback candidate and n;
(2) over the sets where it has one, MLE against MPS and conformal, per n (why small sets use
MPS); (3) the shipped procedure against scipy and old asdx on every set, per distribution at
n = 46 (the 40 + 6 train clips of the synthetic machines) and over all n.

    python benchmarks/calibration_gamma.py [--quick] [--reps 200] [--seed 0] [--no-record]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy.stats as stats

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish

from asdx.scoring.gamma import MIN_MLE_SCORES, GammaFitWarning, fit_gamma, gamma_ppf
from asdx.scoring.threshold import GammaThreshold, conformal_quantile

Q = 0.9
SIZES = (3, 4, 5, 8, 10, 15, 20, 30, 46, 100, 300)
CANDIDATES = ("asdx", "mle", "scipy", "old", "mps", "fixed", "moments", "empirical", "conformal")
FALLBACKS = ("mps", "fixed", "moments", "empirical", "conformal", "scipy", "old")


def _distributions(rng: np.random.Generator, quick: bool) -> dict:
    """name -> (draw(n), survival function)."""

    def by_sampling(draw):
        sample = np.sort(draw(200_000 if quick else 2_000_000))
        return lambda t: 1.0 - np.searchsorted(sample, t, side="right") / sample.size

    def noisy(n):
        return rng.gamma(0.4, size=n) + rng.normal(0.0, 0.05, n)

    def cluster(n):
        return np.where(rng.random(n) < 0.6, rng.normal(1.0, 0.02, n), 1.0 + rng.exponential(1.0, n))

    out = {f"gamma {a:g}": (lambda n, a=a: rng.gamma(a, size=n), lambda t, a=a: stats.gamma.sf(t, a))
           for a in (0.3, 0.5, 0.8, 1.0, 2.0, 5.0, 20.0)}
    out.update({
        "uniform": (lambda n: rng.uniform(size=n), stats.uniform.sf),
        "normal": (lambda n: rng.normal(size=n), stats.norm.sf),
        "lognormal 1": (lambda n: rng.lognormal(0.0, 1.0, n), lambda t: stats.lognorm.sf(t, 1.0)),
        "Lomax 2.5": (lambda n: rng.pareto(2.5, n), lambda t: stats.lomax.sf(t, 2.5)),
        "gamma 0.4 + noise": (noisy, by_sampling(noisy)),
        "cluster + tail": (cluster, by_sampling(cluster)),
    })
    return out


def _quantile(fit) -> float:
    return fit.ppf(Q) if fit.ok else math.nan


def thresholds(x: np.ndarray) -> dict[str, float]:
    """Each candidate's q-quantile threshold for one score set (NaN where it has none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GammaFitWarning)
        out = {"asdx": GammaThreshold(q=Q).fit(x).threshold_}
    mle = fit_gamma(x, method="mle")
    out["mle"] = _quantile(mle)
    try:
        out["scipy"] = float(stats.gamma.ppf(Q, *stats.gamma.fit(x)))
    except (ValueError, RuntimeError):
        out["scipy"] = math.nan
    boundary = fit_gamma(x, loc=float(np.nextafter(x.min(), -np.inf)))  # the old candidate at the spike
    out["old"] = _quantile(boundary if not mle.ok or boundary.loglik > mle.loglik else mle)
    out["mps"] = _quantile(fit_gamma(x, method="mps"))
    distinct = np.unique(x)
    out["fixed"] = _quantile(fit_gamma(x, loc=float(distinct[0] - (distinct[1] - distinct[0]))))
    skew = stats.skew(x)
    if skew > 0:  # moments: shape 4 / skew^2, loc = mean - 2 sd / skew, scale = sd skew / 2
        shape = 4.0 / skew**2
        out["moments"] = float(gamma_ppf(Q, shape, x.mean() - 2.0 * x.std() / skew, x.std() * skew / 2.0))
    else:
        out["moments"] = math.nan
    out["empirical"] = float(np.quantile(x, Q))
    out["conformal"] = conformal_quantile(x, Q)
    return out


def run_study(reps: int, seed: int, quick: bool) -> dict:
    """{(distribution, n): {candidate: exceedances (reps,)}}."""
    rng = np.random.default_rng(seed)
    results = {}
    sizes = (5, 10, 46, 100) if quick else SIZES
    for name, (draw, survival) in _distributions(rng, quick).items():
        for n in sizes:
            count = reps if n <= 46 else max(reps // 2, 1) if n <= 100 else max(reps // 5, 1)
            cells = {c: np.full(count, np.nan) for c in CANDIDATES}
            for r in range(count):
                x = draw(n)
                for candidate, t in thresholds(x).items():
                    if math.isfinite(t):
                        cells[candidate][r] = float(survival(t))
            results[name, n] = cells
            print(f"  {name}, n = {n}: done", flush=True)
    return results


def _cell(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "–"
    return f"{values.mean():.3f} / {np.sqrt(np.mean((values - 0.1) ** 2)):.3f} / {np.mean(values > 0.3):.2f}"


def _pooled(results: dict, n: int | None, candidate: str, mask_from: str | None, interior: bool | None,
            names=None) -> np.ndarray:
    parts = []
    for (name, size), cells in results.items():
        if (n is not None and size != n) or (names is not None and name not in names):
            continue
        values = cells[candidate]
        if mask_from is not None:
            has_interior = np.isfinite(cells[mask_from])
            values = values[has_interior if interior else ~has_interior]
        parts.append(values)
    return np.concatenate(parts) if parts else np.zeros(0)


def tables(results: dict) -> list[str]:
    sizes = sorted({n for _, n in results})
    names = list(dict.fromkeys(name for name, _ in results))
    lines = ["Cells: mean exceedance / RMS distance to 0.10 / fraction of sets above 0.30 (goal 0.10 / small / 0).",
             "", "(1) Sets where the likelihood has no interior maximum (the fallback's sets), all distributions pooled:",
             "", "| n | share of sets | " + " | ".join(FALLBACKS) + " |", "|---:|---:|" + "---|" * len(FALLBACKS)]
    for n in sizes:
        share = np.mean(~np.isfinite(_pooled(results, n, "mle", None, None)))
        lines.append(f"| {n} | {share:.2f} | " + " | ".join(
            _cell(_pooled(results, n, c, "mle", False)) for c in FALLBACKS) + " |")
    lines += ["", "(2) Sets where it has one: the interior MLE against MPS and conformal on the same sets:", "",
              "| n | share of sets | mle | scipy | mps | conformal |", "|---:|---:|---|---|---|---|"]
    for n in sizes:
        share = np.mean(np.isfinite(_pooled(results, n, "mle", None, None)))
        lines.append(f"| {n} | {share:.2f} | " + " | ".join(
            _cell(_pooled(results, n, c, "mle", True)) for c in ("mle", "scipy", "mps", "conformal")) + " |")
    lines += ["", f"(3) Every set: asdx as shipped (MLE from {MIN_MLE_SCORES} scores on where interior, else MPS) "
              "against scipy and old asdx, per distribution:", "",
              "| distribution | asdx, n = 46 | scipy, n = 46 | old asdx, n = 46 | asdx, all n | scipy, all n | "
              "old asdx, all n |", "|---|---|---|---|---|---|---|"]
    for name in names + ["all"]:
        chosen = None if name == "all" else [name]
        row = [_cell(_pooled(results, 46, c, None, None, chosen)) for c in ("asdx", "scipy", "old")]
        row += [_cell(_pooled(results, None, c, None, None, chosen)) for c in ("asdx", "scipy", "old")]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "(4) Every set, all distributions pooled, per n:", "",
              "| n | asdx | scipy | old asdx | mps | conformal |", "|---:|---|---|---|---|---|"]
    for n in sizes:
        lines.append(f"| {n} | " + " | ".join(
            _cell(_pooled(results, n, c, None, None)) for c in ("asdx", "scipy", "old", "mps", "conformal")) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="sets per distribution and n <= 46 (half at 100, "
                        "a fifth at 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 sizes, 10 sets each; not recorded")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    reps = 10 if args.quick else args.reps
    start = time.perf_counter()
    results = run_study(reps, args.seed, args.quick)
    minutes = (time.perf_counter() - start) / 60
    section = [f"## Gamma threshold calibration ({datetime.now():%Y-%m-%d %H:%M})", "",
               f"benchmarks/calibration_gamma.py --reps {reps} --seed {args.seed}: {len(results)} (distribution, n) "
               f"cells, q = {Q}; exceedance = P(fresh score > threshold) under the distribution the set was drawn "
               f"from; {minutes:.1f} min.", ""]
    section += tables(results) + [""] + machine_lines(1, None)
    publish(section, not (args.no_record or args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
