"""Mahalanobis and diagonal-GMM rows for benchmarks/bench_scoring.py.

mahalanobis_rows(): asdx.scoring.mahalanobis (validation, Cholesky of both
precisions and the kernel, K = 2) on 100k x 640 queries against the best NumPy
form, the matmul form (((Q - mu) @ P) * (Q - mu)).sum(1) per component, in the
same dtype. The note gives the kernel's GFLOP/s (useful flops of the triangular
form: N K D (D + 1)) and its share of the machine's GEMM peak, measured in the
same run as numpy matmul on a 4000 x 4000 matrix.

gmm_rows(): asdx.scoring.gmm_diag_loglik against sklearn's
GaussianMixture.score_samples (float64) on 100k x 768 queries, K = 16.

mahalanobis_torch_rows() and gmm_torch_rows(): the same calls on a torch device (a
GPU: the CUDA kernels) against the same forms written in torch on that device, in
the same dtype (benchmarks/gpu_check.py's rows).

Times are best-of-`repeat` after one warm-up run. Standalone:
`python benchmarks/_scoring_maha_gmm.py [repeat]` prints the rows.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import timeit_best


def _gemm_peak_gflops(dtype, repeat: int, size: int = 4000) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    return 2.0 * size**3 / (timeit_best(lambda: a @ b, repeat) * 1e-3) / 1e9


def mahalanobis_rows(repeat: int = 3, n: int = 100_000, d: int = 640, k: int = 2) -> list[dict]:
    from asdx.scoring.mahalanobis import mahalanobis

    rng = np.random.default_rng(0)
    queries64 = rng.standard_normal((n, d))
    means = rng.standard_normal((k, d))
    precisions = []
    for _ in range(k):
        m = rng.standard_normal((d, d))
        precisions.append(m @ m.T / d + np.eye(d))
    precisions = np.stack(precisions)
    rows = []
    for dtype in (np.float32, np.float64):
        queries = queries64.astype(dtype)
        means_t, precisions_t = means.astype(dtype), precisions.astype(dtype)

        def reference():
            out = np.empty((n, k), dtype=dtype)
            for c in range(k):
                centred = queries - means_t[c]
                out[:, c] = ((centred @ precisions_t[c]) * centred).sum(1)
            return out

        ours_ms = timeit_best(lambda: mahalanobis(queries, means, precisions), repeat)
        reference_ms = timeit_best(reference, repeat)
        peak = _gemm_peak_gflops(dtype, repeat)
        gflops = n * k * d * (d + 1) / (ours_ms * 1e-3) / 1e9
        name = np.dtype(dtype).name
        rows.append({
            "kernel": "mahalanobis",
            "input": f"{n}x{d} {name}, K={k}",
            "asdx_ms": ours_ms,
            "reference": f"numpy matmul form ({name})",
            "reference_ms": reference_ms,
            "note": f"{gflops:.0f} GFLOP/s triangular = {100 * gflops / peak:.0f}% of numpy GEMM peak "
                    f"{peak:.0f} GFLOP/s ({name}, 4000^2)",
        })
    return rows


def gmm_rows(repeat: int = 3, n: int = 100_000, d: int = 768, k: int = 16) -> list[dict]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from asdx.scoring.gmm import gmm_diag_loglik

    rng = np.random.default_rng(0)
    queries64 = rng.standard_normal((n, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(k, covariance_type="diag", max_iter=5, random_state=0).fit(queries64[:4000])
    reference_ms = timeit_best(lambda: model.score_samples(queries64), repeat)
    rows = []
    for dtype in (np.float64, np.float32):
        queries = queries64.astype(dtype)
        ours_ms = timeit_best(lambda: gmm_diag_loglik(queries, model.weights_, model.means_, model.covariances_), repeat)
        rows.append({
            "kernel": "gmm_diag_loglik",
            "input": f"{n}x{d} {np.dtype(dtype).name}, K={k}",
            "asdx_ms": ours_ms,
            "reference": "sklearn GaussianMixture.score_samples (float64)",
            "reference_ms": reference_ms,
            "note": "one pass, direct form, float64 log-sum-exp",
        })
    return rows


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
    argv = sys.argv[1:] if argv is None else argv
    repeat = int(argv[0]) if argv else 3
    for row in mahalanobis_rows(repeat) + gmm_rows(repeat):
        ratio = row["reference_ms"] / row["asdx_ms"]
        print(f"{row['kernel']:16s} {row['input']:28s} asdx {row['asdx_ms']:9.1f} ms | "
              f"{row['reference']}: {row['reference_ms']:9.1f} ms | x{ratio:5.2f} | {row['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
