"""Gamma-fit rows for benchmarks/bench_scoring.py: asdx against scipy.stats.gamma.fit.

The reference is what the official baseline calls: scipy.stats.gamma.fit(scores),
looped over the sets for the batched case. Each free-location row first checks the fits on
the data timed: (1) agreement with scipy where scipy's fit is interior (threshold ppf(0.9)
within 1e-3 relative; where it is not, ours must be the more likely interior point: scipy's
Nelder-Mead stops short); (2) calibration: the fraction of fresh draws from each set's own
generating gamma that exceed its threshold (goal 0.10), asdx's and scipy's. Then it times
best-of-`repeat` after one warm-up. CUDA rows are added when a GPU and the CUDA kernels are
there. The calibration on harder sets (J-shaped, heavy-tailed, tiny) is
benchmarks/calibration_gamma.py.

Standalone: python benchmarks/_scoring_gamma.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.stats as stats
import torch

from asdx.scoring.gamma import fit_gamma, fit_gamma_batch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import timeit_best

REFERENCE = "scipy.stats.gamma.fit"
N_SCORES = 1000
N_SETS = 100


def _draw(n_sets: int, n_scores: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline-like score sets: shifted gammas of varied shape (as batch-mean losses are), and
    their generating (shape, loc, scale), one row per set."""
    rng = np.random.default_rng(seed)
    shapes = rng.uniform(1.5, 12.0, size=(n_sets, 1))
    standard = rng.gamma(shapes, 1.0, size=(n_sets, n_scores))
    scale, loc = rng.uniform(0.5, 3.0, (n_sets, 1)), rng.uniform(0.0, 20.0, (n_sets, 1))
    return standard * scale + loc, np.hstack([shapes, loc, scale])


def _score_sets(n_sets: int, n_scores: int, seed: int = 0) -> np.ndarray:
    return _draw(n_sets, n_scores, seed)[0]


def _quality_note(sets: np.ndarray, seed: int, ours) -> str:
    """Agreement with scipy where its fit is interior, and both thresholds' exceedance under the truth."""
    truth = _draw(len(sets), sets.shape[1], seed)[1]
    interior = agree = ours_better = 0
    exceed_ours, exceed_scipy = [], []
    for i, (x, params) in enumerate(zip(sets, truth)):
        theirs = stats.gamma.fit(x)
        mine = ours[i]
        t_theirs, t_ours = stats.gamma.ppf(0.9, *theirs), mine.ppf(0.9)
        exceed_ours.append(stats.gamma.sf(t_ours, *params))
        exceed_scipy.append(stats.gamma.sf(t_theirs, *params))
        if theirs[0] > 1.0 and x.min() - theirs[1] > 1e-6 * np.ptp(x):
            interior += 1
            if abs(t_ours - t_theirs) <= 1e-3 * abs(t_theirs):
                agree += 1
            elif mine.method == "mle" and mine.loglik > stats.gamma.logpdf(x, *theirs).sum():
                ours_better += 1
    return (f"scipy interior on {interior}/{len(sets)}: ppf(0.9) within 1e-3 on {agree}, ours more likely on "
            f"{ours_better}; exceedance {np.mean(exceed_ours):.3f} (scipy {np.mean(exceed_scipy):.3f}, goal 0.10)")


def gamma_rows(repeat: int = 5) -> list[dict]:
    """Rows: kernel, input, asdx_ms, reference, reference_ms, note."""
    one = _score_sets(1, N_SCORES)[0]
    many = _score_sets(N_SETS, N_SCORES, seed=1)
    one_fit, many_fit = fit_gamma_batch(one[None]), fit_gamma_batch(many)
    rows = []

    ours_one = timeit_best(lambda: fit_gamma(one), repeat)
    ref_one = timeit_best(lambda: stats.gamma.fit(one), repeat)
    rows.append({"kernel": "gamma_fit (3 free)", "input": f"1 set x {N_SCORES}", "asdx_ms": ours_one,
                 "reference": REFERENCE, "reference_ms": ref_one,
                 "note": _quality_note(one[None], 0, one_fit)})

    ours_many = timeit_best(lambda: fit_gamma_batch(many), repeat)
    ref_repeat = max(1, min(repeat, 2))  # scipy over 100 sets takes ~1 s per run
    ref_many = timeit_best(lambda: [stats.gamma.fit(x) for x in many], ref_repeat)
    rows.append({"kernel": "gamma_fit (3 free)", "input": f"{N_SETS} sets x {N_SCORES}", "asdx_ms": ours_many,
                 "reference": f"{REFERENCE} (loop)", "reference_ms": ref_many,
                 "note": _quality_note(many, 1, many_fit)})

    ours_fixed = timeit_best(lambda: fit_gamma_batch(many, loc=0.0), repeat)
    ref_fixed = timeit_best(lambda: [stats.gamma.fit(x, floc=0.0) for x in many], ref_repeat)
    rows.append({"kernel": "gamma_fit (floc=0)", "input": f"{N_SETS} sets x {N_SCORES}", "asdx_ms": ours_fixed,
                 "reference": f"{REFERENCE}(floc=0) (loop)", "reference_ms": ref_fixed,
                 "note": "scipy solves the same 1-D equation; its loop is the cost"})

    from asdx._native import cuda_kernels_compiled

    if torch.cuda.is_available() and cuda_kernels_compiled():
        device_sets = torch.from_numpy(many).cuda()
        ours_gpu = timeit_best(lambda: fit_gamma_batch(device_sets), repeat, torch.cuda.synchronize)
        rows.append({"kernel": "gamma_fit (3 free) CUDA", "input": f"{N_SETS} sets x {N_SCORES}",
                     "asdx_ms": ours_gpu, "reference": f"{REFERENCE} (loop, CPU)", "reference_ms": ref_many,
                     "note": f"{torch.cuda.get_device_name()}, one block per set"})
    return rows


def kernels_mode_restorer():
    """asdx.set_kernels and a function that returns the choice to the environment (set_kernels(None):
    ASDX_KERNELS, else auto); NotImplementedError where this asdx has no kernel selection yet."""
    import asdx

    if not hasattr(asdx, "set_kernels"):
        raise NotImplementedError("asdx.set_kernels missing: this asdx has no torch implementations to select")
    return asdx.set_kernels, lambda: asdx.set_kernels(None)


def gamma_torch_rows(repeat: int = 3, device="cuda", n_sets: int = N_SETS, n_scores: int = N_SCORES) -> list[dict]:
    """fit_gamma_batch on `device` with asdx's native kernel against its torch implementation on the same
    device (asdx.set_kernels "native" vs "torch"), free location; the note gives their agreement."""
    set_kernels, restore = kernels_mode_restorer()
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sets = torch.from_numpy(_score_sets(n_sets, n_scores, seed=1)).to(device)
    times, fits = {}, {}
    try:
        for mode in ("native", "torch"):
            set_kernels(mode)
            fits[mode] = fit_gamma_batch(sets)
            times[mode] = timeit_best(lambda: fit_gamma_batch(sets), repeat, sync)
    finally:
        restore()
    ppf = {mode: np.array([fits[mode][i].ppf(0.9) for i in range(n_sets)]) for mode in fits}
    gap = float(np.nanmax(np.abs(ppf["native"] - ppf["torch"]) / np.abs(ppf["native"])))
    return [{"kernel": "gamma_fit (3 free)", "input": f"{n_sets} sets x {n_scores}", "asdx_ms": times["native"],
             "reference": f"asdx torch implementation ({torch.device(device).type})", "reference_ms": times["torch"],
             "note": f"ppf(0.9) max relative gap native vs torch {gap:.2g}"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| kernel | input | asdx ms | reference | reference ms | speed-up | note |")
    print("|---|---|---:|---|---:|---:|---|")
    for row in gamma_rows(args.repeat):
        ratio = row["reference_ms"] / row["asdx_ms"]
        print(f"| {row['kernel']} | {row['input']} | {row['asdx_ms']:.3f} | {row['reference']} | "
              f"{row['reference_ms']:.1f} | {ratio:.0f}x | {row['note']} |")


if __name__ == "__main__":
    main()
