"""Scoring benchmark: asdx's scoring kernels and FAISS banks against the best reference form.

Rows (each timed best-of-N after a warm-up, reference measured in the same run):
  - Mahalanobis (100k x 640, K = 2) vs the NumPy matmul form ((Q - mu) @ P * (Q - mu)).sum(1), one row per
    CPU ISA path (--isa; ASDX_ISA, docs/kernels.md), with the share of numpy's GEMM peak measured in the same
    run, and the best path against BLAS per L2-sized block (benchmarks/_scoring_maha_gmm.py)
  - diagonal-GMM log-likelihood (100k x 768, K = 16) vs sklearn GaussianMixture.score_samples, per ISA path
  - gamma MLE + ppf (1 set and 100 sets of 1000 scores) vs scipy.stats.gamma.fit
  - kNN bank search (2k queries, 10k x 768 bank) vs sklearn NearestNeighbors(algorithm="brute")
and, when a GPU and faiss-gpu are present, the GPU bank vs torch brute force (cdist + topk) on
the same GPU. The float32 GMM row times asdx in float32 against sklearn in float64: it is labelled
so and has no goal (not like for like).

    python benchmarks/bench_scoring.py [--threads 2] [--repeat 3] [--isa all|auto|avx512|avx2|baseline]
                                       [--quick] [--no-record]
    python -m benchmarks scoring [same options]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

import asdx

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish, timeit_best

# kernel -> minimum reference_ms / asdx_ms
GOALS = {"mahalanobis": 1.5, "gmm_diag_loglik": 3.0, "gamma_fit": 100.0, "knn_cpu": 1.0, "knn_gpu": 1.0}


def knn_rows(repeat: int, n_bank: int = 10_000, n_queries: int = 2_000, dim: int = 768) -> list[dict]:
    from sklearn.neighbors import NearestNeighbors

    from asdx.index import Bank, faiss_gpu_available

    rng = np.random.default_rng(0)
    bank = rng.standard_normal((n_bank, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    index = Bank(bank)
    sklearn_nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(bank)
    reference_ms = timeit_best(lambda: sklearn_nn.kneighbors(queries), repeat)
    size = f"{n_queries} queries vs {n_bank} x {dim}, k = 1"
    rows = [dict(kernel="knn_cpu", input=size, asdx_ms=timeit_best(lambda: index.search(queries, 1), repeat),
                 reference="sklearn brute force (CPU)", reference_ms=reference_ms, note="faiss IndexFlatL2")]
    if torch.cuda.is_available() and faiss_gpu_available():
        rows.append(knn_gpu_row(bank, queries, repeat))
    return rows


def knn_gpu_row(bank: np.ndarray, queries: np.ndarray, repeat: int) -> dict:
    """The FAISS GPU flat index against torch brute force (cdist + topk) on the same GPU, k = 1."""
    from asdx.index import Bank

    gpu_index = Bank(torch.from_numpy(bank).cuda())
    gpu_bank = torch.from_numpy(bank).cuda()
    gpu_queries = torch.from_numpy(queries).cuda()

    def torch_brute_force():
        return torch.cdist(gpu_queries, gpu_bank).topk(1, dim=1, largest=False)

    found = np.asarray(gpu_index.search(gpu_queries, 1).indices).reshape(-1)
    brute = torch_brute_force().indices.reshape(-1).cpu().numpy()
    agree = float(np.mean(found == brute))
    return dict(kernel="knn_gpu", input=f"{len(queries)} queries vs {len(bank)} x {bank.shape[1]}, k = 1",
                asdx_ms=timeit_best(lambda: gpu_index.search(gpu_queries, 1), repeat, torch.cuda.synchronize),
                reference="torch cdist + topk (same GPU)",
                reference_ms=timeit_best(torch_brute_force, repeat, torch.cuda.synchronize),
                note=f"faiss GPU flat index on {torch.cuda.get_device_name()}; "
                     f"same neighbour for {agree:.1%} of queries")


def collect(repeat: int, quick: bool, isa: str = "all", threads: int | None = None) -> tuple[list[dict], list[str]]:
    """All rows; a family whose benchmark module is missing or fails is reported, not fatal. isa: the CPU ISA
    paths of the Mahalanobis and GMM rows (all = every path this CPU supports)."""
    rows, problems = [], []
    knn_size = (500, 100, 64) if quick else (10_000, 2_000, 768)
    families = [("knn", lambda: knn_rows(repeat, *knn_size))]
    try:
        from benchmarks import _scoring_maha_gmm as maha_gmm

        paths = maha_gmm.isa_paths(isa)
        families += [("mahalanobis", lambda: maha_gmm.mahalanobis_rows(repeat, paths=paths, threads=threads)),
                     ("gmm_diag", lambda: maha_gmm.gmm_rows(repeat, paths=paths, threads=threads))]
    except ImportError as error:
        problems.append(f"mahalanobis/gmm rows unavailable: {error}")
    try:
        from benchmarks import _scoring_gamma as gamma

        families.append(("gamma", lambda: gamma.gamma_rows(repeat)))
    except ImportError as error:
        problems.append(f"gamma rows unavailable: {error}")
    for name, run in families:
        try:
            rows.extend(run())
        except Exception as error:  # keep the other families' numbers
            problems.append(f"{name} benchmark failed: {type(error).__name__}: {error}")
    return [label_precision(r) for r in rows], problems


def host_lines() -> list[str]:
    """The CPU as lscpu names it, with asdx's CPU ISA paths and the load now."""
    try:
        from benchmarks._scoring_maha_gmm import host_line
    except ImportError:
        return []
    return [host_line()]


def label_precision(row: dict) -> dict:
    """A row timing asdx in float32 against a float64 reference says so, and gets no goal."""
    if "float32" in row["input"] and "float64" in row["reference"] and "float32 vs float64" not in row["kernel"]:
        row = dict(row, kernel=f"{row['kernel']}_f32 (float32 vs float64)",
                   note=f"{row.get('note', '')}; asdx in float32, reference in float64: not like for like, no goal")
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| kernel | input | asdx ms | reference | reference ms | speed-up | goal | note |",
             "|---|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        ratio = r["reference_ms"] / r["asdx_ms"]
        goal = GOALS.get(r["kernel"].split(" ")[0])
        verdict = "" if goal is None else f"≥{goal:g}×: {'met' if ratio >= goal else 'NOT met'}"
        lines.append(f"| {r['kernel']} | {r['input']} | {r['asdx_ms']:.2f} | {r['reference']} | "
                     f"{r['reference_ms']:.2f} | {ratio:.1f}× | {verdict} | {r.get('note', '')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--isa", default="all", choices=("all", "auto", "avx512", "avx2", "baseline"),
                        help="CPU ISA paths of the Mahalanobis and GMM rows (default: every path this CPU supports)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, nothing recorded")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    asdx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rows, problems = collect(repeat, args.quick, args.isa, args.threads)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    section = [f"## bench_scoring — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, gpu), *host_lines(), "", *table(rows), ""]
    section += [f"- {p}" for p in problems]
    if not gpu:
        section.append("GPU rows skipped: torch sees no CUDA device.")
    publish(section, record_it=not (args.quick or args.no_record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
