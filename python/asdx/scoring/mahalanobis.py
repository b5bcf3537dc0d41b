"""Mahalanobis scoring: the batched kernel, the official AE-baseline clip score and `MahalanobisScorer`.

The covariance and precision fitting lives in asdx.scoring.covariance.

Each precision P is factored once, in float64, as P = L Lᵀ with L lower
triangular; the kernel (csrc/cpu/mahalanobis.cpp, csrc/cuda/mahalanobis.cu)
then computes d(q) = ||Lᵀ (q − μ)||², a triangular product with half the flops
of the dense quadratic form, reading each block of queries once for all
components. The computation runs in the queries' precision (float32 or
float64); the sum of squares is accumulated in float64. Where asdx.kernels chooses torch
(ASDX_KERNELS; docs/kernels.md), asdx.torch_kernels.mahalanobis_factored computes the same.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator

from asdx._arrays import Prepared, like_input, match_device, prepare, require_same_width
from asdx._cuda import launch_on
from asdx._native import _C, follow_torch_threads
from asdx.scoring._domains import domain_codes
from asdx.scoring._estimator import check_bool, check_n_features, check_X, require_fitted
from asdx.kernels import dispatch
from asdx.scoring.covariance import check_shrinkage, check_square_symmetric, covariance, stable_precision
from asdx.torch_kernels import mahalanobis_factored

__all__ = ["MahalanobisScorer", "ae_mahalanobis_scores", "mahalanobis"]


def _factor_precisions(precisions: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factors (K, D, D) float64 of precision matrices; ValueError naming the bad one."""
    factors = np.empty_like(precisions)
    for k, p in enumerate(precisions):
        label = f"{name}[{k}]"
        check_square_symmetric(p, label)
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
    """(N, K) squared distances in q's dtype and on q's device (numpy for host numpy queries); factors
    (K, D, D) float64. Native CPU / CUDA kernel or the torch implementation (asdx.kernels.dispatch)."""
    dtype = q.numpy_dtype
    k = int(factors.shape[0])
    m = prepare(means, "means", ndim=2, dtype=dtype)
    f = Prepared(np.ascontiguousarray(factors, dtype=dtype), "factors")
    n, d = q.shape
    device = q.data.device if q.is_torch else None

    def native_cuda():
        with launch_on(device, "mahalanobis") as stream:
            out = torch.empty((n, k), dtype=q.data.dtype, device=device)
            if n > 0:
                m_dev, f_dev = match_device(m, q), match_device(f, q)
                _C.mahalanobis_cuda(q.data.data_ptr(), n, d, m_dev.data_ptr(), f_dev.data_ptr(), k,
                                    out.data_ptr(), stream, dtype == np.float32)
        return out

    def native_cpu():
        follow_torch_threads()
        return _C.mahalanobis_cpu(q.numpy(), m.numpy(), f.data)

    def torch_path():
        queries = q.data if q.is_torch else torch.from_numpy(q.data)
        out = mahalanobis_factored(queries, torch.as_tensor(m.data), torch.from_numpy(f.data))
        return out if q.is_torch else out.numpy()

    return dispatch("mahalanobis", device, native_cpu, native_cuda, torch_path)


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

    fit(X, y=None, *, domain=None): one mean and covariance per domain present in `domain`
    ("source"/"target" or 0/1), or a single one without `domain`; y is ignored (scikit-learn's
    convention, so a Pipeline routes `mahalanobisscorer__domain=...` to it). The precision is
    the stable inverse of the (optionally shrunk) covariance (`stable_precision`).
    score_samples(X): the squared distance to the nearest fitted domain, float64 (N,),
    higher = more anomalous (the "selective" minimum of the DCASE AE baseline). This is the
    DCASE sign, the opposite of scikit-learn's outlier detectors (whose score_samples is higher =
    more normal). A scikit-learn estimator otherwise: get_params/clone work, and an unfitted
    scorer raises sklearn.exceptions.NotFittedError.

    Parameters, checked in fit: shrinkage (None, "ledoit-wolf" or a float in [0, 1], see
    `covariance`); ridge (True or False, see `stable_precision`).
    Learned: means_ (K, D), covariances_, precisions_, factors_ (K, D, D) float64,
    domains_ (tuple of "source"/"target" or ("all",)), n_features_in_, and train_scores_,
    the leave-one-out scores of the training rows (in-sample ones are biased low; see its
    docstring).
    """

    def __init__(self, shrinkage: None | str | float = None, ridge: bool = True):
        self.shrinkage = shrinkage
        self.ridge = ridge

    def fit(self, X, y=None, *, domain=None) -> "MahalanobisScorer":
        """One mean and precision per domain of `domain` ("source"/"target" or 0/1 per row; None:
        one for all rows). y: ignored (scikit-learn's convention)."""
        check_shrinkage(self.shrinkage)
        check_bool(self, "ridge")
        data = check_X(X, self, dtype=np.float64, fitting=True).numpy()
        if domain is None:
            indices = [("all", np.arange(data.shape[0]))]
        else:
            codes = domain_codes(domain, data.shape[0])
            indices = [(name, np.flatnonzero(codes == code)) for code, name in ((0, "source"), (1, "target"))
                       if (codes == code).any()]
        groups = [(name, data[rows]) for name, rows in indices]
        means, covariances, precisions, factors = [], [], [], []
        for name, rows in groups:
            if rows.shape[0] < 2:
                raise ValueError(f"X: the {name} domain has {rows.shape[0]} sample(s); at least 2 are needed to fit "
                                 "a covariance.")
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
        self._train = np.array(data, copy=True)  # train_scores_ reads it later: not a view of the caller's X
        self._train_rows = [rows for _, rows in indices]
        self._train_scores_cache = None
        return self

    def score_samples(self, X) -> np.ndarray:
        """Squared distance to the nearest fitted domain, float64 (N,).

        DCASE sign: higher = more anomalous, the opposite of scikit-learn's outlier detectors
        (whose score_samples is higher = more normal; e.g. EllipticEnvelope's is the negated
        Mahalanobis distance).
        """
        return self._domain_scores(X, "score_samples(X)").min(1)

    @property
    def train_scores_(self) -> np.ndarray:
        """Honest scores of the training rows, float64 (N,) in fit order, DCASE sign: leave-one-out.

        Row i is scored as score_samples would score it had it not been in the training data:
        its squared distance to its own domain refitted without it (mean, covariance with the
        same shrinkage, precision with the same ridge rule), and to the other domains as
        fitted, the minimum over domains. In-sample distances are biased low: a fitted row
        helped shape its own mean and covariance (without shrinkage, d_i <= (n-1)²/n however
        far out the row lies).

        Exact, not an approximation. With shrinkage None or a float the refit is a rank-one
        downdate of the domain's scatter matrix A (A₋ᵢ = A − n/(n−1) rᵢrᵢᵀ, rᵢ = xᵢ − μ),
        solved for all rows at once with one eigendecomposition of A and the
        Sherman–Morrison formula (the shrinkage target tr(S)/D I is updated too); rows whose
        left-out covariance is (nearly) singular, all rows with "ledoit-wolf" (its shrinkage
        intensity is re-estimated from the remaining rows), and domains whose covariance
        needed a ridge are refitted one row at a time, which costs one covariance fit per row.
        A domain with 2 rows has no covariance without one of them: its rows are scored
        against the other domains only (ValueError when there is none).
        Computed on first access and cached; each access returns a copy. Raises
        NotFittedError before fit.
        """
        require_fitted(self, "factors_", "reading train_scores_")
        if self._train_scores_cache is None:
            self._train_scores_cache = self._leave_one_out_scores()
        return self._train_scores_cache.copy()

    def _leave_one_out_scores(self) -> np.ndarray:
        x = self._train
        in_sample = self.domain_scores(x)  # (N, K): the distances to the domains a row did not help fit
        scores = np.full(x.shape[0], np.inf)
        for j, (name, rows) in enumerate(zip(self.domains_, self._train_rows)):
            others = [c for c in range(len(self.domains_)) if c != j]
            if others:
                scores[rows] = in_sample[np.ix_(rows, others)].min(1)
            if rows.size >= 3:
                scores[rows] = np.minimum(scores[rows], self._own_domain_left_out(x[rows], rows, name))
            elif not others:
                raise ValueError(f"X: the {name} domain has {rows.size} rows; leaving one out leaves too few to "
                                 "fit a covariance and there is no other domain, so train_scores_ is undefined.")
        return scores

    def _own_domain_left_out(self, rows: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
        """Squared distance of each row to its domain's fit without it, (n,) float64; n >= 3.
        index: the rows' positions in the X given to fit (for messages)."""
        n, d = rows.shape
        out = np.full(n, np.nan)
        refit = np.ones(n, dtype=bool)
        if not isinstance(self.shrinkage, str):  # None or a float: the closed form
            alpha = 0.0 if self.shrinkage is None else float(self.shrinkage)
            r = rows - rows.mean(0)
            scatter = r.T @ r
            eigenvalues, vectors = np.linalg.eigh(0.5 * (scatter + scatter.T))
            c = n / (n - 1.0)
            # (n-2) Σ₋ᵢ = M_i − (1−α) c rᵢrᵢᵀ with M_i = (1−α) A + α tᵢ I, tᵢ = tr(A₋ᵢ)/D; the left-out
            # row sits at xᵢ − μ₋ᵢ = c rᵢ, so d₋ᵢ = (n−2) c² m / (1 − (1−α) c m), m = rᵢᵀ M_i⁻¹ rᵢ.
            t = (np.trace(scatter) - c * np.einsum("ij,ij->i", r, r)) / d
            spectrum = (1.0 - alpha) * eigenvalues[None, :] + alpha * t[:, None]  # eigenvalues of each M_i
            projected = r @ vectors
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                m = np.einsum("ij,ij->i", projected, projected / spectrum)
                slack = 1.0 - (1.0 - alpha) * c * m  # the share of M_i's variance along rᵢ that stays
                closed = (n - 2.0) * c * c * m / slack
            # Closed form where both inverses are well conditioned (then neither this domain's fit nor
            # the row's refit needs a ridge); elsewhere (a covariance that is or nearly is singular,
            # where stable_precision may add a ridge) the row is refitted.
            well = (spectrum.min(1) > 1e-8 * spectrum.max(1)) & (slack >= 1e-3) & np.isfinite(closed)
            out[well] = closed[well]
            refit = ~well
        if refit.any():
            out[refit] = self._refit_rows(rows, np.flatnonzero(refit), index, name)
        return out

    def _refit_rows(self, rows: np.ndarray, which: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
        distances = np.empty(which.size)
        ridged = 0
        for slot, i in enumerate(which):
            rest = np.delete(rows, i, axis=0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    _, factor = stable_precision(covariance(rest, self.shrinkage), ridge=self.ridge)
                except ValueError as error:
                    raise ValueError(f"X: leaving row {index[i]} out of the {name} domain for train_scores_: "
                                     f"{error}") from None
            for w in caught:
                if "ridge" in str(w.message):
                    ridged += 1
                else:
                    warnings.warn(w.message, w.category, stacklevel=5)
            distances[slot] = float(np.sum((factor.T @ (rows[i] - rest.mean(0))) ** 2))
        if ridged:
            warnings.warn(f"MahalanobisScorer.train_scores_: {ridged} leave-one-out covariance(s) of the {name} "
                          "domain were not positive definite; stable_precision added a ridge.", UserWarning,
                          stacklevel=5)
        return distances

    def domain_scores(self, X) -> np.ndarray:
        """Squared distances to each fitted domain, float64 (N, K), columns in `domains_` order."""
        return self._domain_scores(X, "domain_scores(X)")

    def _domain_scores(self, X, method: str) -> np.ndarray:
        """domain_scores for `method`, the public method called (its name goes in the not-fitted error)."""
        require_fitted(self, "factors_", method)
        x = check_X(X, self)
        check_n_features(self, x)
        distances = _run_kernel(x, self.means_, self.factors_)
        if isinstance(distances, torch.Tensor):
            distances = distances.detach().cpu().numpy()
        return np.asarray(distances, dtype=np.float64)
