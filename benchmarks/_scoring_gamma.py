"""Gamma-fit rows for benchmarks/bench_scoring.py: asdx against scipy.stats.gamma.fit.

The reference is what the official baseline calls: scipy.stats.gamma.fit(scores),
looped over the sets for the batched case. Each row checks first that asdx's fit is at
least as likely as scipy's on the data timed (a note says so otherwise), then times
best-of-`repeat` after one warm-up. CUDA rows are added when a GPU and the CUDA
kernels are there.

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


def _score_sets(n_sets: int, n_scores: int, seed: int = 0) -> np.ndarray:
    """Baseline-like score sets: shifted gammas of varied shape (as batch-mean losses are)."""
    rng = np.random.default_rng(seed)
    shapes = rng.uniform(1.5, 12.0, size=(n_sets, 1))
    return rng.gamma(shapes, 1.0, size=(n_sets, n_scores)) * rng.uniform(0.5, 3.0, (n_sets, 1)) + rng.uniform(
        0.0, 20.0, (n_sets, 1))


def _quality_note(sets: np.ndarray, ours_loglik: np.ndarray) -> str:
    worse = 0
    for x, ll in zip(sets, ours_loglik):
        theirs = stats.gamma.logpdf(x, *stats.gamma.fit(x)).sum()
        worse += ll < theirs - 1e-6 * abs(theirs)
    return "loglik >= scipy's on every set" if worse == 0 else f"loglik below scipy's on {worse} set(s)"


def gamma_rows(repeat: int = 5) -> list[dict]:
    """Rows: kernel, input, asdx_ms, reference, reference_ms, note."""
    one = _score_sets(1, N_SCORES)[0]
    many = _score_sets(N_SETS, N_SCORES, seed=1)
    rows = []

    ours_one = timeit_best(lambda: fit_gamma(one), repeat)
    ref_one = timeit_best(lambda: stats.gamma.fit(one), repeat)
    rows.append({"kernel": "gamma_fit (3 free)", "input": f"1 set x {N_SCORES}", "asdx_ms": ours_one,
                 "reference": REFERENCE, "reference_ms": ref_one,
                 "note": _quality_note(one[None], np.array([fit_gamma(one).loglik]))})

    ours_many = timeit_best(lambda: fit_gamma_batch(many), repeat)
    ref_repeat = max(1, min(repeat, 2))  # scipy over 100 sets takes ~1 s per run
    ref_many = timeit_best(lambda: [stats.gamma.fit(x) for x in many], ref_repeat)
    rows.append({"kernel": "gamma_fit (3 free)", "input": f"{N_SETS} sets x {N_SCORES}", "asdx_ms": ours_many,
                 "reference": f"{REFERENCE} (loop)", "reference_ms": ref_many,
                 "note": _quality_note(many, fit_gamma_batch(many).loglik)})

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
