"""Diagonal-covariance GMM log-likelihood (our kernel) and `DiagGMMScorer`.

The kernel (csrc/cpu/gmm.cpp, csrc/cuda/gmm.cu) reads each query once, forms
the quadratic terms in the direct form (x − μ)² / σ² (stable for tiny
variances, unlike the expanded form sklearn uses) and combines the components
with a max-shifted log-sum-exp in float64 (asdx.torch_kernels.gmm where asdx.kernels chooses torch). Fitting uses
`sklearn.mixture.GaussianMixture(covariance_type="diag")`.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator

from asdx import _cuda
from asdx._native import _C, follow_torch_threads, require_cuda_kernels
from asdx.kernels import dispatch
from asdx.torch_kernels import gmm_diag_loglik as torch_gmm_diag_loglik
from asdx.scoring._domains import domain_codes
from asdx.scoring._estimator import check_int, check_n_features, check_X, is_int, is_real, require_fitted
from asdx.splits import stratified_folds
from asdx._arrays import Prepared, like_input, match_device, prepare, require_same_width

__all__ = ["DiagGMMScorer", "gmm_diag_loglik"]


def _check_parameters(q: Prepared, weights, means, variances) -> tuple[np.ndarray, Prepared, Prepared]:
    dtype = q.numpy_dtype
    w = prepare(weights, "weights", ndim=1, dtype=np.float64, allow_empty=False).numpy()
    m = prepare(means, "means", ndim=2, dtype=dtype, allow_empty=False)
    v = prepare(variances, "variances", ndim=2, dtype=dtype, allow_empty=False)
    require_same_width(q, m)
    if v.shape != m.shape:
        raise ValueError(f"variances: shape {v.shape} does not match means' {m.shape}.")
    if w.shape[0] != m.shape[0]:
        raise ValueError(f"weights: {w.shape[0]} weights for {m.shape[0]} components (means {m.shape}).")
    if (w < 0).any() or not (w > 0).any():
        raise ValueError("weights: must be >= 0 with at least one > 0.")
    host_v = v.numpy()
    if not (host_v > 0).all():
        raise ValueError(f"variances: must be > 0 (smallest is {host_v.min():.3g}).")
    with np.errstate(over="ignore", divide="ignore"):
        if not np.isfinite(1.0 / host_v.astype(dtype)).all():
            raise ValueError(f"variances: 1/variance overflows {np.dtype(dtype).name} (smallest is {host_v.min():.3g}).")
    return w, m, v


def gmm_diag_loglik(queries, weights, means, variances):
    """Per-sample log-likelihood (N,) float64 of queries (N, D) under a diagonal GMM.

    weights (K) (used as given; sklearn's sum to 1), means (K, D), variances (K, D) > 0
    (sklearn's `covariances_` for covariance_type="diag"). Computed in the queries'
    precision, combined in float64. numpy or torch; a CUDA tensor runs the CUDA kernel
    and returns a CUDA tensor. N = 0 gives an empty array.
    """
    q = prepare(queries, "queries", ndim=2)
    w, m, v = _check_parameters(q, weights, means, variances)
    with np.errstate(divide="ignore"):
        log_weights = np.log(w)
    n, d = q.shape
    device = q.data.device if q.is_torch else None

    def native_cuda():
        require_cuda_kernels("gmm_diag_loglik")
        out = torch.empty((n,), dtype=torch.float64, device=device)
        if n > 0:
            lw = torch.from_numpy(log_weights).to(device)
            m_dev, v_dev = match_device(m, q), match_device(v, q)
            k, float32 = m.shape[0], q.numpy_dtype == np.float32
            # Precisions and per-component constants: device memory from torch's allocator, not ours.
            work = _cuda.scratch(_C.gmm_diag_scratch_bytes(k, d, float32), device)
            with _cuda.launch_on(device, "gmm_diag_loglik") as stream:
                _C.gmm_diag_loglik_cuda(q.data.data_ptr(), n, d, lw.data_ptr(), m_dev.data_ptr(), v_dev.data_ptr(),
                                        k, out.data_ptr(), work.data_ptr(), stream, float32)
        return out

    def native_cpu():
        follow_torch_threads()
        return like_input(_C.gmm_diag_loglik_cpu(q.numpy(), log_weights, m.numpy(), v.numpy()), q)

    def torch_path():
        queries = q.data if q.is_torch else torch.from_numpy(q.data)
        out = torch_gmm_diag_loglik(queries, torch.from_numpy(log_weights), torch.as_tensor(m.data),
                                    torch.as_tensor(v.data))
        return like_input(out, q)

    return dispatch("gmm", device, native_cpu, native_cuda, torch_path)


class DiagGMMScorer(BaseEstimator):
    """Diagonal-covariance Gaussian-mixture anomaly scorer: score = −log p(x).

    The GMM half of T_fusion (system report §2.3: "KNN and diagonal GMM negative
    log-likelihood scorers ... rank-normalized and combined by element-wise minimum").

    fit(X, y=None, *, domain=None) fits one mixture to all rows with
    `sklearn.mixture.GaussianMixture(covariance_type="diag")`: its components cover both
    domains (the other scorers fit per domain and take the min), so `domain` does not change
    the mixture; it only stratifies the folds of train_scores_; y is ignored (scikit-learn's
    convention, so a Pipeline routes `diaggmmscorer__domain=...` to it).
    score_samples(X) is the negative per-sample
    log-likelihood from our kernel, float64 (N,), higher = more anomalous: the DCASE sign, the
    opposite of scikit-learn's score_samples (higher = more normal). A scikit-learn estimator
    otherwise: get_params/clone work, and an unfitted scorer raises NotFittedError.

    n_components: an int >= 1, or "bic": fit K = 1..max_components (K above the number
    of rows skipped) and keep the fit with the lowest BIC (the smallest K on a tie), so
    each machine gets as many components as its data supports.
    n_splits: the number of folds of train_scores_ (an int >= 2).
    reg_covar (a number >= 0), max_iter (an int >= 1) and random_state (None, an int in
    [0, 2**32) or a numpy RandomState) go to GaussianMixture. All are checked in fit.

    Learned: n_components_ (the K used), bic_ (dict K -> BIC on the fit rows; only the
    K used when n_components is an int), weights_ (K), means_ (K, D), variances_ (K, D)
    float64, converged_, n_iter_ (EM steps of the kept fit), n_features_in_, and train_scores_, the honest (out-of-fold) scores
    of the fit rows (see its docstring).
    """

    def __init__(self, n_components: int | str = 1, reg_covar: float = 1e-6, max_iter: int = 100,
                 random_state: int | None = 0, max_components: int = 8, n_splits: int = 5):
        self.n_components = n_components
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.random_state = random_state
        self.max_components = max_components
        self.n_splits = n_splits

    def _check_settings(self) -> None:
        if not (self.n_components == "bic" if isinstance(self.n_components, str)
                else is_int(self.n_components) and self.n_components >= 1):
            raise ValueError(f'n_components: must be an integer >= 1 or "bic", got {self.n_components!r}.')
        check_int(self, "max_components", 1)
        if not (is_real(self.reg_covar) and self.reg_covar >= 0):
            raise ValueError(f"reg_covar: must be a finite number >= 0, got {self.reg_covar!r}.")
        check_int(self, "max_iter", 1)
        check_int(self, "n_splits", 2)
        seed = self.random_state
        if not (seed is None or isinstance(seed, np.random.RandomState) or (is_int(seed) and 0 <= seed < 2**32)):
            raise ValueError(f"random_state: must be None, an integer in [0, 2**32) or a numpy RandomState, "
                             f"got {seed!r}.")

    def _fit_mixture(self, x: np.ndarray, k: int):
        from sklearn import config_context
        from sklearn.mixture import GaussianMixture

        # x is always a NumPy array here: the caller's array-API dispatch setting must not reach
        # GaussianMixture, whose k-means initialisation refuses to run under it.
        with config_context(array_api_dispatch=False):
            return GaussianMixture(n_components=int(k), covariance_type="diag", reg_covar=float(self.reg_covar),
                                   max_iter=int(self.max_iter), random_state=self.random_state).fit(x)

    def fit(self, X, y=None, *, domain=None) -> "DiagGMMScorer":
        """Fits one mixture to every row of X; `domain` ("source"/"target" or 0/1 per row), if
        given, only stratifies the folds of train_scores_. y: ignored (scikit-learn's convention)."""
        self._check_settings()
        x = check_X(X, self, dtype=np.float64, fitting=True).numpy()
        if self.n_components != "bic" and x.shape[0] < self.n_components:
            raise ValueError(f"X: {x.shape[0]} rows for n_components={self.n_components}; need at least as many rows.")
        codes = None if domain is None else domain_codes(domain, x.shape[0])  # unknown labels are refused
        if self.n_components == "bic":
            bic, mixture = {}, None
            for k in range(1, min(int(self.max_components), x.shape[0]) + 1):
                candidate = self._fit_mixture(x, k)
                bic[k] = float(candidate.bic(x))
                if mixture is None or bic[k] < bic[mixture.n_components]:
                    mixture = candidate
        else:
            mixture = self._fit_mixture(x, self.n_components)
            bic = {int(self.n_components): float(mixture.bic(x))}
        self.n_components_ = int(mixture.n_components)
        self.bic_ = bic
        self.weights_ = np.asarray(mixture.weights_, dtype=np.float64)
        self.means_ = np.asarray(mixture.means_, dtype=np.float64)
        self.variances_ = np.asarray(mixture.covariances_, dtype=np.float64)
        self.converged_ = bool(mixture.converged_)
        self.n_iter_ = int(mixture.n_iter_)
        self.n_features_in_ = x.shape[1]
        self._train = np.array(x, copy=True)  # train_scores_ reads it later: not a view of the caller's X
        self._train_domain = codes
        self._train_scores_cache = None
        return self

    @property
    def train_scores_(self) -> np.ndarray:
        """Honest scores of the fit rows, float64 (N,) in fit order, DCASE sign: out-of-fold −log p.

        In-sample −log p of the fit rows is optimistic (a lone outlier can even get a
        component of its own), so a threshold or a rank reference built from it is
        biased; cross-fitting avoids that. Each row is scored by a mixture fitted, with
        n_components_ and the scorer's settings, on the other folds of the rows given to
        fit. With "bic" the K choice therefore saw all rows: a small leak accepted so that
        BIC is not rerun per fold.

        Folds: StratifiedKFold on fit's `domain` when every domain has >= n_splits rows;
        else with n_splits lowered to the smallest domain count when that is >= 2
        (the rare target domain still lands in every fold); else (or without a domain)
        plain KFold. Always shuffle=True, random_state=self.random_state; drawn by
        asdx.splits.stratified_folds(draws="sklearn"), scikit-learn's draws.

        Computed on first access (n_splits mixture fits) and cached; each access returns a
        copy. Raises NotFittedError before fit, and ValueError naming n_splits when there
        are fewer rows than folds or a fold leaves fewer rows than components.
        """
        require_fitted(self, "means_", "reading train_scores_")
        if self._train_scores_cache is None:
            self._train_scores_cache = self._out_of_fold_scores()
        return self._train_scores_cache.copy()

    def _out_of_fold_scores(self) -> np.ndarray:
        from sklearn.utils import check_random_state

        x, labels, n_splits = self._train, self._train_domain, int(self.n_splits)
        n = x.shape[0]
        if n_splits > n:
            raise ValueError(f"n_splits: {n_splits} folds for the {n} rows given to fit; train_scores_ needs "
                             "at least one row per fold (use fewer splits or more rows).")
        smallest = int(np.unique(labels, return_counts=True)[1].min()) if labels is not None else 0
        stratify = smallest >= 2
        if stratify:
            n_splits = min(n_splits, smallest)
        fold_of = stratified_folds(labels if stratify else np.zeros(n), n_splits,
                                   check_random_state(self.random_state), stratify=stratify, draws="sklearn")
        k = self.n_components_
        scores = np.full(n, np.nan)
        for fold in range(n_splits):
            kept, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
            if kept.size < k:
                raise ValueError(f"n_splits: fold {fold} leaves {kept.size} rows to fit, fewer than the "
                                 f"n_components_={k} components; use fewer splits or more rows.")
            mixture = self._fit_mixture(x[kept], k)
            scores[held] = -gmm_diag_loglik(x[held], mixture.weights_, mixture.means_, mixture.covariances_)
        return scores

    def score_samples(self, X) -> np.ndarray:
        """Negative log-likelihood, float64 (N,).

        DCASE sign: higher = more anomalous, the opposite of scikit-learn's score_samples
        (GaussianMixture's is the log-likelihood, higher = more normal).
        """
        require_fitted(self, "means_", "score_samples(X)")
        x = check_X(X, self)
        check_n_features(self, x)
        loglik = gmm_diag_loglik(x.data, self.weights_, self.means_, self.variances_)
        if isinstance(loglik, torch.Tensor):
            loglik = loglik.detach().cpu().numpy()
        return -np.asarray(loglik, dtype=np.float64)
