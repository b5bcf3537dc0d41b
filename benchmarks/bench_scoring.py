"""Scoring benchmark: asdx's scoring kernels and FAISS banks against the best reference form.

Rows (each timed best-of-N after a warm-up, reference measured in the same run):
  - Mahalanobis (100k x 640, K = 2) vs the NumPy matmul form ((Q - mu) @ P * (Q - mu)).sum(1), one row per
    CPU ISA path (--isa; ASDX_ISA, docs/kernels.md), with the share of numpy's GEMM peak measured in the same
    run, and the best path against BLAS per L2-sized block (benchmarks/_scoring_maha_gmm.py)
  - diagonal-GMM log-likelihood (100k x 768, K = 16) vs sklearn GaussianMixture.score_samples, per ISA path
  - gamma MLE + ppf (1 set and 100 sets of 1000 scores) vs scipy.stats.gamma.fit
  - kNN bank search (2k queries, 10k x 768 bank) vs sklearn NearestNeighbors(algorithm="brute"), and
    (no goal) vs FAISS IndexFlatL2 on the CPU and a plain NumPy GEMM + argmin
and, when a GPU and faiss-gpu are present, the GPU bank vs torch brute force (cdist + topk) on
the same GPU. The float32 GMM row times asdx in float32 against sklearn in float64: it is labelled
so and has no goal (not like for like).

    python benchmarks/bench_scoring.py [--threads 2] [--repeat 3] [--isa all|auto|avx512|avx2|baseline]
                                       [--only knn|mahalanobis|gmm_diag|gamma] [--quick] [--no-record]
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
    """asdx's CPU bank (NumPy-BLAS GEMM + top-k) against sklearn brute force (the goal row), and, in the
    same run, against FAISS IndexFlatL2 and plain NumPy (one GEMM + argmin, no blocking): k = 1.

    Every library gets the thread count asdx uses (torch's, --threads) for its BLAS, FAISS also for its
    OpenMP loops. Which BLAS each runs (and its kernel for this CPU) is in the notes: faiss-cpu wheels
    bundle their own OpenBLAS.
    """
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_info, threadpool_limits

    from asdx.index import Bank, faiss_gpu_available

    try:  # before threadpool_limits, which sets only the libraries loaded when it starts
        import faiss
    except ImportError as error:
        faiss, faiss_missing = None, f"faiss does not import ({error}): not timed"
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((n_bank, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    threads = torch.get_num_threads()
    size = f"{n_queries} queries vs {n_bank} x {dim}, k = 1"
    index = Bank(bank)
    sklearn_nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(bank)
    expected = index.search(queries, 1).indices[:, 0]

    def numpy_gemm():
        return (np.einsum("ij,ij->i", bank, bank) - 2 * (queries @ bank.T)).argmin(axis=1)

    def agree(found) -> str:
        return f"same neighbour as asdx for {np.mean(np.asarray(found).reshape(-1) == expected):.1%} of queries"

    with threadpool_limits(threads, user_api="blas"):
        asdx_ms = timeit_best(lambda: index.search(queries, 1), repeat)
        rows = [dict(kernel="knn_cpu", input=size, asdx_ms=asdx_ms, reference="sklearn brute force (CPU)",
                     reference_ms=timeit_best(lambda: sklearn_nn.kneighbors(queries), repeat),
                     note=f"asdx: blocked NumPy GEMM + top-k; {agree(sklearn_nn.kneighbors(queries)[1])}"),
                dict(kernel="knn_cpu_vs_numpy", input=size, asdx_ms=asdx_ms,
                     reference=f"NumPy: one GEMM + argmin ({n_queries * n_bank * 4 / 1e6:.0f} MB float32 tile)",
                     reference_ms=timeit_best(numpy_gemm, repeat),
                     note=f"no goal: the plain form, one product over the whole bank; {agree(numpy_gemm())}")]
        faiss_row = dict(kernel="knn_cpu_vs_faiss", input=size, asdx_ms=asdx_ms, reference="faiss IndexFlatL2 (CPU)")
        if faiss is None:
            rows.append(dict(faiss_row, reference_ms=float("nan"), note=faiss_missing))
        else:  # asdx's CPU bank before issue 25
            faiss.omp_set_num_threads(threads)
            flat = faiss.IndexFlatL2(dim)
            flat.add(bank)
            rows.append(dict(faiss_row, reference_ms=timeit_best(lambda: flat.search(queries, 1), repeat),
                             note=f"no goal: which library wins on this CPU; faiss {faiss.__version__}, "
                                  f"{agree(flat.search(queries, 1)[1])}"))
    blas = "; ".join(f"{p['internal_api']} {p['version']} ({p.get('architecture', '?')} kernel) from "
                     f"{p['filepath'].rsplit('site-packages/', 1)[-1]}" for p in threadpool_info()
                     if p["user_api"] == "blas")
    rows[0]["note"] += f"; BLAS libraries loaded (numpy's, scipy's, faiss's): {blas}"
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


FAMILIES = ("knn", "mahalanobis", "gmm_diag", "gamma")


def collect(repeat: int, quick: bool, isa: str = "all", threads: int | None = None,
            only: str | None = None) -> tuple[list[dict], list[str]]:
    """All rows (or one family's); a family whose benchmark module is missing or fails is reported, not fatal.
    isa: the CPU ISA paths of the Mahalanobis and GMM rows (all = every path this CPU supports)."""
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
        if only not in (None, name):
            continue
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
    parser.add_argument("--only", choices=FAMILIES, help="run one family of rows")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    asdx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rows, problems = collect(repeat, args.quick, args.isa, args.threads, args.only)
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
