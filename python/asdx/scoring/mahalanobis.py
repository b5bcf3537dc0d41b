"""Mahalanobis scoring: the batched kernel, the official AE-baseline clip score and `MahalanobisScorer`.

The covariance and precision fitting lives in asdx.scoring.covariance.

Each precision P is factored once, in float64, as P = L Lᵀ with L lower
triangular; the kernel (csrc/cpu/mahalanobis.cpp, csrc/cuda/mahalanobis.cu)
then computes d(q) = ||Lᵀ (q − μ)||², a triangular product with half the flops
of the dense quadratic form, reading each block of queries once for all
components. The computation runs in the queries' precision (float32 or
float64); the sum of squares is accumulated in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from asdx._arrays import Prepared, like_input, match_device, prepare, require_same_width
from asdx._native import _C, follow_torch_threads, require_cuda_kernels
from asdx.scoring._domains import domain_codes
from asdx.scoring.covariance import _check_square_symmetric, covariance, stable_precision

__all__ = ["MahalanobisScorer", "ae_mahalanobis_scores", "mahalanobis"]


def _factor_precisions(precisions: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factors (K, D, D) float64 of precision matrices; ValueError naming the bad one."""
    factors = np.empty_like(precisions)
    for k, p in enumerate(precisions):
        label = f"{name}[{k}]"
        _check_square_symmetric(p, label)
        try:
            factors[k] = np.linalg.cholesky(0.5 * (p + p.T))
        except np.linalg.LinAlgError:
            raise ValueError(
                f"{label}: is not positive definite (smallest eigenvalue {np.linalg.eigvalsh(p)[0]:.3g}); "
                "build precisions with stable_precision()."
            ) from None
    return factors


# ------------------------------------------------------------------- the kernel


def _run_kernel(q: Prepared, means: np.ndarray | torch.Tensor, factors: np.ndarray) -> np.ndarray | torch.Tensor:
    """(N, K) squared distances in q's dtype and on q's device; factors (K, D, D) float64."""
    dtype = q.numpy_dtype
    k = int(factors.shape[0])
    m = prepare(means, "means", ndim=2, dtype=dtype)
    f = Prepared(np.ascontiguousarray(factors, dtype=dtype), "factors")
    n, d = q.shape
    if q.on_cuda:
        require_cuda_kernels("mahalanobis")
        device = q.data.device
        out = torch.empty((n, k), dtype=q.data.dtype, device=device)
        if n > 0:
            m_dev, f_dev = match_device(m, q), match_device(f, q)
            with torch.cuda.device(device):
                stream = torch.cuda.current_stream(device).cuda_stream
                _C.mahalanobis_cuda(q.data.data_ptr(), n, d, m_dev.data_ptr(), f_dev.data_ptr(), k,
                                    out.data_ptr(), stream, dtype == np.float32)
        return out
    follow_torch_threads()
    return _C.mahalanobis_cpu(q.numpy(), m.numpy(), f.data)


def _ndim(x) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


def _prepare_components(queries, means, precisions) -> tuple[Prepared, Prepared, np.ndarray]:
    q = prepare(queries, "queries", ndim=2)
    m = prepare(means, "means", ndim=1 if _ndim(means) == 1 else 2, dtype=np.float64).numpy()
    if m.ndim == 1:
        m = m[None, :]
    p = prepare(precisions, "precisions", ndim=2 if _ndim(precisions) == 2 else 3, dtype=np.float64).numpy()
    if p.ndim == 2:
        p = p[None, :, :]
    if m.shape[0] == 0:
        raise ValueError("means: needs at least one component.")
    mp = Prepared(m, "means")
    require_same_width(q, mp)
    if p.shape[0] != m.shape[0]:
        raise ValueError(f"precisions: {p.shape[0]} matrices for {m.shape[0]} means.")
    if p.shape[1:] != (m.shape[1], m.shape[1]):
        raise ValueError(f"precisions: expected shape ({m.shape[0]}, {m.shape[1]}, {m.shape[1]}), got {p.shape}.")
    return q, mp, p


def mahalanobis(queries, means, precisions):
    """Squared Mahalanobis distances (N, K) of queries (N, D) to K (mean, precision) pairs.

    means (K, D) or (D,); precisions (K, D, D) or (D, D), symmetric positive definite
    (see `stable_precision`). numpy or torch input; a CUDA tensor runs the CUDA kernel.
    The result has the queries' kind, device and float dtype; N = 0 gives (0, K).
    """
    q, m, p = _prepare_components(queries, means, precisions)
    factors = _factor_precisions(p, "precisions")
    return like_input(_run_kernel(q, m.data, factors), q)


def ae_mahalanobis_scores(clip_mean_errors, precisions):
    """Official AE-baseline MAHALA clip score: min over k of d̄ᵀ P_k d̄, shape (N,).

    d̄ is the clip-mean reconstruction-error vector, used raw (no mean is
    subtracted), and P_k are the source and target precisions (the "selective
    Mahalanobis" of the official baseline, nttcslab/dcase2023_task2_baseline_ae).
    Same kernel with zero means.
    """
    q = prepare(clip_mean_errors, "clip_mean_errors", ndim=2)
    p = prepare(precisions, "precisions", ndim=3, dtype=np.float64, allow_empty=False).numpy()
    if p.shape[1:] != (q.shape[1], q.shape[1]):
        raise ValueError(
            f"precisions: expected shape (K, {q.shape[1]}, {q.shape[1]}) to match clip_mean_errors, got {p.shape}."
        )
    factors = _factor_precisions(p, "precisions")
    distances = _run_kernel(q, np.zeros((p.shape[0], q.shape[1])), factors)
    return like_input(distances.min(1).values if isinstance(distances, torch.Tensor) else distances.min(1), q)


# ------------------------------------------------------------------- the scorer


class MahalanobisScorer(BaseEstimator):
    """Mahalanobis anomaly scorer with separate source/target fits and min selection.

    fit(X, domain): one mean and covariance per domain present in `domain`
    ("source"/"target" or 0/1), or a single one without `domain`. The precision is
    the stable inverse of the (optionally shrunk) covariance (`stable_precision`).
    score_samples(X): the squared distance to the nearest fitted domain, float64 (N,),
    higher = more anomalous (the "selective" minimum of the DCASE AE baseline). This is the
    DCASE sign, the opposite of scikit-learn's outlier detectors (whose score_samples is higher =
    more normal). A scikit-learn estimator otherwise: get_params/clone work, and an unfitted
    scorer raises sklearn.exceptions.NotFittedError.

    Parameters: shrinkage (None, "ledoit-wolf" or a float, see `covariance`);
    ridge (see `stable_precision`).
    Learned: means_ (K, D), covariances_, precisions_, factors_ (K, D, D) float64,
    domains_ (tuple of "source"/"target" or ("all",)), n_features_in_.
    """

    def __init__(self, shrinkage: None | str | float = None, ridge: bool = True):
        self.shrinkage = shrinkage
        self.ridge = ridge

    def fit(self, X, domain=None) -> "MahalanobisScorer":
        x = prepare(X, "X", ndim=2, allow_empty=False)
        data = x.numpy().astype(np.float64, copy=False)
        if domain is None:
            groups = [("all", data)]
        else:
            codes = domain_codes(domain, data.shape[0])
            groups = [(name, data[codes == code]) for code, name in ((0, "source"), (1, "target")) if (codes == code).any()]
        means, covariances, precisions, factors = [], [], [], []
        for name, rows in groups:
            if rows.shape[0] < 2:
                raise ValueError(f"X: the {name} domain has {rows.shape[0]} row(s); need at least 2 to fit a covariance.")
            cov = covariance(rows, self.shrinkage)
            precision, factor = stable_precision(cov, ridge=self.ridge)
            means.append(rows.mean(0))
            covariances.append(cov)
            precisions.append(precision)
            factors.append(factor)
        self.domains_ = tuple(name for name, _ in groups)
        self.means_ = np.stack(means)
        self.covariances_ = np.stack(covariances)
        self.precisions_ = np.stack(precisions)
        self.factors_ = np.stack(factors)
        self.n_features_in_ = data.shape[1]
        return self

    def score_samples(self, X) -> np.ndarray:
        """Squared distance to the nearest fitted domain, float64 (N,); higher = more anomalous."""
        return self.domain_scores(X).min(1)

    def domain_scores(self, X) -> np.ndarray:
        """Squared distances to each fitted domain, float64 (N, K), columns in `domains_` order."""
        if not hasattr(self, "factors_"):
            raise NotFittedError("MahalanobisScorer: call fit(X) before domain_scores(X).")
        x = prepare(X, "X", ndim=2)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X: has {x.shape[1]} features, but the scorer was fitted with {self.n_features_in_}.")
        distances = _run_kernel(x, self.means_, self.factors_)
        if isinstance(distances, torch.Tensor):
            distances = distances.detach().cpu().numpy()
        return np.asarray(distances, dtype=np.float64)
