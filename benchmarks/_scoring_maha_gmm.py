"""Mahalanobis and diagonal-GMM rows for benchmarks/bench_scoring.py, one row per CPU ISA path.

mahalanobis_rows(): asdx.scoring.mahalanobis (validation, Cholesky of both
precisions and the kernel, K = 2) on 100k x 640 queries, once per ISA path of the
native CPU kernel (ASDX_ISA, docs/kernels.md; every path this CPU supports by
default), against the best NumPy form, the matmul form
(((Q - mu) @ P) * (Q - mu)).sum(1) per component, in the same dtype. The note gives
the kernel's GFLOP/s (useful flops of the triangular form: N K D (D + 1)) and its
share of numpy's GEMM peak, measured in the same run with the same thread count:
numpy matmul on 4000 x 4000 and on the Mahalanobis shape (N x D @ D x D). It also
gives the library alternative, BLAS per L2-sized block (`blas_per_block`: each
block of rows centred into a reused buffer, multiplied by L with numpy matmul into
a reused buffer, its rows' sums of squares), whose time is a row of its own
against the native kernel's best path.

gmm_rows(): asdx.scoring.gmm_diag_loglik per ISA path against sklearn's
GaussianMixture.score_samples (float64) on 100k x 768 queries, K = 16.

Every note carries the 1-minute load average when the row was measured and the
thread count; `host_line()` names the CPU (lscpu) and its ISA paths.

mahalanobis_torch_rows() and gmm_torch_rows(): the same calls on a torch device (a
GPU: the CUDA kernels) against the same forms written in torch on that device, in
the same dtype (benchmarks/gpu_check.py's rows).

Times are best-of-`repeat` after one warm-up run; the CPU rows interleave their calls (`best_interleaved`), so
a drifting load on a shared host reaches our kernel and numpy's GEMM peak alike. Standalone:
`python benchmarks/_scoring_maha_gmm.py [repeat] [--isa all|auto|avx512|avx2|baseline] [--threads N]`
prints the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import timeit_best

PEAK_GOAL = 0.80  # issue 25: the Mahalanobis kernel at >= 80 % of numpy's GEMM peak (4000^2)


def isa_paths(choice: str = "all") -> list[str]:
    """The paths to time: "all" = every path this CPU supports (best first), "auto" = the best one, or one name."""
    from asdx.kernels import ISA_CHOICES, cpu_isa_supported

    supported = cpu_isa_supported()
    if choice == "all":
        return supported
    if choice == "auto":
        return supported[:1]
    if choice not in ISA_CHOICES or choice not in supported:
        raise ValueError(f"--isa: {choice!r} is not among this CPU's paths ({', '.join(supported)}) or all/auto.")
    return [choice]


@contextlib.contextmanager
def isa_path(path: str) -> Iterator[None]:
    """The native CPU kernels run on `path` inside the block (ASDX_ISA is read at each kernel call)."""
    before = os.environ.get("ASDX_ISA")
    os.environ["ASDX_ISA"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ASDX_ISA", None)
        else:
            os.environ["ASDX_ISA"] = before


def _blas_threads(threads: int | None):
    """numpy's BLAS limited to `threads` (threadpoolctl), so its peak is measured on the kernels' cores."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


def host_line() -> str:
    """The CPU (lscpu's model name, else /proc/cpuinfo), its ISA paths, cores and the load average now."""
    from asdx.kernels import cpu_isa_supported

    model = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                     None)
    except (OSError, subprocess.SubprocessError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"- CPU: {model or 'unknown'} (lscpu), {cores} usable cores; asdx CPU ISA paths: "
            f"{', '.join(cpu_isa_supported())}; load average (1/5/15 min) {load}")


def _context(threads: int | None) -> str:
    threads_text = f"{threads} threads" if threads else "default threads"
    return f"load {os.getloadavg()[0]:.2f}, {threads_text}"


def best_interleaved(functions: dict, repeat: int, settle_s: float = 0.25) -> dict:
    """Best wall-clock ms of each function over `repeat` rounds, each round calling every function once (after
    one warm-up call each). On a shared host the load drifts: interleaving gives each function the same
    chances, so ratios taken from one run (our kernel against numpy's GEMM peak) compare like with like.
    After each call it sleeps settle_s (untimed): OpenBLAS's idle threads spin for a while after a call
    (about 0.1 s) and would take the cores from the next function."""
    import time

    for fn in functions.values():
        fn()
        time.sleep(settle_s)
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
            time.sleep(settle_s)
    return best


def _gemm(a: np.ndarray, b: np.ndarray) -> tuple[Callable[[], object], float]:
    """A GEMM call a @ b into a reused output, and its flops."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    return (lambda: np.matmul(a, b, out=out)), 2.0 * a.shape[0] * a.shape[1] * b.shape[1]


def _gemm_peak_gflops(dtype, repeat: int, threads: int | None = None, size: int = 4000) -> float:
    rng = np.random.default_rng(0)
    call, flops = _gemm(rng.standard_normal((size, size)).astype(dtype), rng.standard_normal((size, size)).astype(dtype))
    with _blas_threads(threads):
        ms = timeit_best(call, repeat)
    return flops / (ms * 1e-3) / 1e9


def blas_per_block(queries: np.ndarray, means: np.ndarray, factors: np.ndarray, block_bytes: int = 1 << 20):
    """(N, K) squared distances ||(q - mu_k) L_k||^2 with numpy's BLAS, per block of rows of ~block_bytes
    (L2-sized): the block centred into a reused buffer, multiplied by L_k (dense GEMM, twice the triangular
    flops) into a reused buffer, then its rows' sums of squares. The library alternative to the native kernel."""
    n, d = queries.shape
    k = means.shape[0]
    rows = max(1, block_bytes // (queries.itemsize * d))
    out = np.empty((n, k), dtype=queries.dtype)
    centred = np.empty((rows, d), dtype=queries.dtype)
    product = np.empty((rows, d), dtype=queries.dtype)
    for start in range(0, n, rows):
        m = min(rows, n - start)
        x, y = centred[:m], product[:m]
        for c in range(k):
            np.subtract(queries[start:start + m], means[c], out=x)
            np.matmul(x, factors[c], out=y)
            out[start:start + m, c] = np.einsum("ij,ij->i", y, y)
    return out


def mahalanobis_rows(repeat: int = 3, n: int = 100_000, d: int = 640, k: int = 2, paths: list[str] | None = None,
                     threads: int | None = None) -> list[dict]:
    from asdx.scoring.mahalanobis import _factor_precisions, mahalanobis

    paths = isa_paths() if paths is None else paths
    rng = np.random.default_rng(0)
    queries64 = rng.standard_normal((n, d))
    means = rng.standard_normal((k, d))
    precisions = []
    for _ in range(k):
        m = rng.standard_normal((d, d))
        precisions.append(m @ m.T / d + np.eye(d))
    precisions = np.stack(precisions)
    factors64 = _factor_precisions(precisions, "precisions")
    flops = n * k * d * (d + 1)  # the triangle's multiply-adds, 2 flops each
    rng_gemm = np.random.default_rng(1)
    rows = []
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        queries = queries64.astype(dtype)
        means_t, precisions_t, factors_t = means.astype(dtype), precisions.astype(dtype), factors64.astype(dtype)

        def reference():
            out = np.empty((n, k), dtype=dtype)
            for c in range(k):
                centred = queries - means_t[c]
                out[:, c] = ((centred @ precisions_t[c]) * centred).sum(1)
            return out

        square = rng_gemm.standard_normal((4000, 4000)).astype(dtype)
        peak_call, peak_flops = _gemm(square, square)
        shape_call, shape_flops = _gemm(queries, factors_t[0])

        def on_path(path: str) -> Callable[[], object]:
            def run():
                with isa_path(path):
                    return mahalanobis(queries, means, precisions)
            return run

        functions = {"peak": peak_call, "shape": shape_call, "reference": reference,
                     "blas_per_block": lambda: blas_per_block(queries, means_t, factors_t)}
        functions.update({path: on_path(path) for path in paths})
        with _blas_threads(threads):
            ms = best_interleaved(functions, repeat)
        peak = peak_flops / (ms["peak"] * 1e-3) / 1e9
        shape_peak = shape_flops / (ms["shape"] * 1e-3) / 1e9
        context = _context(threads)
        for path in paths:
            gflops = flops / (ms[path] * 1e-3) / 1e9
            share = gflops / peak
            rows.append({
                "kernel": "mahalanobis",
                "input": f"{n}x{d} {name}, K={k}, {path}",
                "asdx_ms": ms[path],
                "reference": f"numpy matmul form ({name})",
                "reference_ms": ms["reference"],
                "note": f"ISA path {path}: {gflops:.0f} GFLOP/s triangular = {100 * share:.0f}% of numpy GEMM peak "
                        f"{peak:.0f} GFLOP/s ({name}, 4000^2; goal >= {100 * PEAK_GOAL:.0f}%: "
                        f"{'met' if share >= PEAK_GOAL else 'NOT met'}), {100 * gflops / shape_peak:.0f}% of numpy "
                        f"GEMM on {n}x{d} @ {d}x{d} ({shape_peak:.0f} GFLOP/s); {context}",
            })
        best_path = min(paths, key=lambda path: ms[path])
        blas_gflops = flops / (ms["blas_per_block"] * 1e-3) / 1e9
        rows.append({
            "kernel": "mahalanobis_vs_blas_per_block",
            "input": f"{n}x{d} {name}, K={k}",
            "asdx_ms": ms[best_path],
            "reference": f"numpy BLAS per 1 MB block: centre, matmul by L, row sums of squares ({name})",
            "reference_ms": ms["blas_per_block"],
            "note": f"asdx: its fastest ISA path here ({best_path}); BLAS per block {blas_gflops:.0f} GFLOP/s "
                    f"triangular = {100 * blas_gflops / peak:.0f}% of peak (its dense GEMM does twice the "
                    f"triangle's flops); {context}",
        })
    return rows


def gmm_rows(repeat: int = 3, n: int = 100_000, d: int = 768, k: int = 16, paths: list[str] | None = None,
             threads: int | None = None) -> list[dict]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from asdx.scoring.gmm import gmm_diag_loglik

    paths = isa_paths() if paths is None else paths
    rng = np.random.default_rng(0)
    queries64 = rng.standard_normal((n, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(k, covariance_type="diag", max_iter=5, random_state=0).fit(queries64[:4000])
    functions = {"reference": lambda: model.score_samples(queries64)}
    for dtype in (np.float64, np.float32):
        queries = queries64.astype(dtype)
        for path in paths:
            def run(queries=queries, path=path):
                with isa_path(path):
                    return gmm_diag_loglik(queries, model.weights_, model.means_, model.covariances_)
            functions[(np.dtype(dtype).name, path)] = run
    with _blas_threads(threads):
        ms = best_interleaved(functions, repeat)
    context = _context(threads)
    return [{
        "kernel": "gmm_diag_loglik",
        "input": f"{n}x{d} {name}, K={k}, {path}",
        "asdx_ms": ms[(name, path)],
        "reference": "sklearn GaussianMixture.score_samples (float64)",
        "reference_ms": ms["reference"],
        "note": f"ISA path {path}; one pass, direct form, float64 log-sum-exp; {context}",
    } for name in ("float64", "float32") for path in paths]


def _sync(device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def mahalanobis_torch_rows(repeat: int = 3, device="cuda", n: int = 100_000, d: int = 640, k: int = 2) -> list[dict]:
    """asdx.scoring.mahalanobis on `device` tensors against the matmul form in torch on the same device.

    The asdx time includes what its public call does besides the kernel (validation, the Cholesky
    factors of the precisions on the host); the torch form gets its precisions on the device already.
    """
    import torch

    from asdx.scoring.mahalanobis import mahalanobis

    rng = np.random.default_rng(0)
    queries64 = rng.standard_normal((n, d))
    means = rng.standard_normal((k, d))
    precisions = np.stack([m @ m.T / d + np.eye(d) for m in rng.standard_normal((k, d, d))])
    sync, rows = _sync(device), []
    for dtype in (torch.float32, torch.float64):
        queries = torch.as_tensor(queries64, dtype=dtype, device=device)
        means_t = torch.as_tensor(means, dtype=dtype, device=device)
        precisions_t = torch.as_tensor(precisions, dtype=dtype, device=device)

        def torch_form():
            centred = queries[None] - means_t[:, None]  # (K, N, D)
            return ((centred @ precisions_t) * centred).sum(-1).T

        name = str(dtype).removeprefix("torch.")
        rows.append({"kernel": "mahalanobis", "input": f"{n}x{d} {name}, K={k}",
                     "asdx_ms": timeit_best(lambda: mahalanobis(queries, means, precisions), repeat, sync),
                     "reference": f"torch matmul form ({name}, {torch.device(device).type})",
                     "reference_ms": timeit_best(torch_form, repeat, sync),
                     "note": "asdx: the public call (validation, host Cholesky, kernel)"})
    return rows


def gmm_torch_rows(repeat: int = 3, device="cuda", n: int = 100_000, d: int = 768, k: int = 16) -> list[dict]:
    """asdx.scoring.gmm_diag_loglik on `device` tensors against the torch form on the same device: the
    expanded quadratic (sklearn's form: q^2 @ (1/var) - 2 q @ (mu/var) + const, as matmuls) and a
    float64 log-sum-exp, in the queries' dtype."""
    import torch

    from asdx.scoring.gmm import gmm_diag_loglik

    rng = np.random.default_rng(0)
    queries64 = rng.standard_normal((n, d))
    weights = rng.dirichlet(np.ones(k))
    means = rng.standard_normal((k, d))
    variances = rng.uniform(0.5, 2.0, (k, d))
    sync, rows = _sync(device), []
    for dtype in (torch.float64, torch.float32):
        queries = torch.as_tensor(queries64, dtype=dtype, device=device)
        precision = torch.as_tensor(1.0 / variances, dtype=dtype, device=device)  # (K, D)
        scaled_means = torch.as_tensor(means / variances, dtype=dtype, device=device)
        constant = torch.as_tensor(np.log(weights) - 0.5 * (d * np.log(2 * np.pi) + np.log(variances).sum(1)
                                                            + (means**2 / variances).sum(1)), device=device)

        def torch_form():
            quadratic = queries.square() @ precision.T - 2.0 * (queries @ scaled_means.T)  # (N, K)
            return torch.logsumexp(constant - 0.5 * quadratic.double(), dim=1)

        name = str(dtype).removeprefix("torch.")
        rows.append({"kernel": "gmm_diag_loglik", "input": f"{n}x{d} {name}, K={k}",
                     "asdx_ms": timeit_best(lambda: gmm_diag_loglik(queries, weights, means, variances), repeat, sync),
                     "reference": f"torch expanded form ({name}, {torch.device(device).type})",
                     "reference_ms": timeit_best(torch_form, repeat, sync),
                     "note": "torch form: sklearn's expanded quadratic as matmuls, float64 log-sum-exp"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mahalanobis and GMM rows per CPU ISA path")
    parser.add_argument("repeat", type=int, nargs="?", default=3)
    parser.add_argument("--isa", default="all", help="all (every path this CPU supports), auto, avx512, avx2, baseline")
    parser.add_argument("--threads", type=int, default=None, help="asdx, torch and numpy BLAS threads")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        import asdx

        asdx.set_num_threads(args.threads)
    paths = isa_paths(args.isa)
    print(host_line())
    for row in mahalanobis_rows(args.repeat, paths=paths, threads=args.threads) + \
            gmm_rows(args.repeat, paths=paths, threads=args.threads):
        ratio = row["reference_ms"] / row["asdx_ms"]
        print(f"{row['kernel']:16s} {row['input']:36s} asdx {row['asdx_ms']:9.1f} ms | "
              f"{row['reference']}: {row['reference_ms']:9.1f} ms | x{ratio:5.2f} | {row['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
