"""Band-wise memory scores with VarMin rescaling (the beam system: BEAM, arXiv 2603.13749; VarMin, Matsumoto et al.).

One memory of normal clips per frequency band; a clip's band score is its cosine distance
D = ½(1 − cos) to the nearest reference of that band, less α_f times that reference's density b
(mean distance to its K nearest other references), so that sparse regions of the memory do not
read as anomalous; the clip score is the mean over bands. docs/systems/beam.md has every choice.

The search is one GEMM per band on the input's device: the offset is fused as the GEMM's bias
(torch.baddbmm), which is the max-inner-product form ½ − ½ [x; 1]·[y; 2αb] of
`augmented_vectors` without building the extra dimension. benchmarks/RESULTS.md compares it with FAISS.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator

from asdx._arrays import prepare
from asdx.scoring._domains import domain_masks
from asdx.scoring._estimator import check_bool, check_int, require_fitted

NORM_EPS = 1e-12  # as asdx.reference.band_memory: a shorter vector counts as zero (cosine 0, D = ½)
VAR_EPS = 1e-12  # α_f = 0 when Var(b) is at most this
CHUNK_ELEMENTS = 1 << 24  # (bands x queries x references) distances held at once: 64 MiB of float32


def unit_bands(x: torch.Tensor) -> torch.Tensor:
    """(N, F, D) -> (F, N, D) unit vectors (zero where the norm is at most NORM_EPS)."""
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    unit = torch.where(norms > NORM_EPS, x / torch.where(norms > NORM_EPS, norms, torch.ones_like(norms)),
                       torch.zeros_like(x))
    return unit.transpose(0, 1).contiguous()


def augmented_vectors(queries: np.ndarray, memory: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One band's max-inner-product form: unit queries (Q, D), unit memory (R, D), offset (R,) = α b ->
    ([x; 1] (Q, D+1), [y; 2 offset] (R, D+1)), with ½ − ½ x̃·ỹ = D(x, y) − offset: the nearest rescaled
    reference is the one of largest inner product (what a FAISS IndexFlatIP searches)."""
    q = np.concatenate([queries, np.ones((len(queries), 1), dtype=queries.dtype)], axis=1)
    y = np.concatenate([memory, 2.0 * np.asarray(offset, dtype=memory.dtype)[:, None]], axis=1)
    return q, y


def _without_self(d: torch.Tensor, rows: slice) -> torch.Tensor:
    """+inf at each memory row's own entry of (F, rows, R), in place: by index, so a duplicate clip still counts."""
    own = torch.arange(rows.start, rows.stop, device=d.device)
    d[:, own - rows.start, own] = torch.inf
    return d


def _chunks(n_rows: int, bands: int, refs: int):
    step = max(1, CHUNK_ELEMENTS // max(1, bands * refs))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


class BandMemoryScorer(BaseEstimator):
    """BEAM band-wise nearest-neighbour scores with VarMin density rescaling; DCASE sign (higher = more anomalous).

    X is (clips, bands, dim), numpy or torch (CUDA tensors are scored on their GPU); a 2-D X
    (clips, dim) is one band. fit(X, y=None, *, domain=None) keeps every row as the memory: BEAM has one
    memory over source and target together, so `domain` is checked and otherwise unused (it is
    accepted so Pipelines route it as to the other scorers).

    Parameters: n_density_neighbors (K >= 1 of the density b), varmin (False: the raw BEAM scores).

    Learned: memory_ (bands, refs, dim) unit vectors, density_ (refs, bands), alpha_ (bands,) (zeros
    without VarMin), n_bands_, n_features_in_ (bands x dim), and the leave-one-out train scores
    train_scores_ (refs,), train_band_scores_ and train_raw_band_scores_ (refs, bands): each clip
    scored against the memory without itself, densities recomputed without it, α as fitted.
    """

    def __init__(self, n_density_neighbors: int = 4, varmin: bool = True):
        self.n_density_neighbors = n_density_neighbors
        self.varmin = varmin

    # ------------------------------------------------------------------ input
    def _check_X(self, X, fitting: bool) -> torch.Tensor:
        """(N, F, D) float32/float64 tensor (2-D input: F = 1); numpy goes through sklearn's check_array."""
        if not isinstance(X, torch.Tensor):
            from sklearn.utils import check_array

            X = check_array(X, accept_sparse=False, dtype=[np.float64, np.float32], ensure_all_finite=False,
                            allow_nd=True, ensure_min_samples=2 if fitting else 0, estimator=self, input_name="X")
        if X.ndim not in (2, 3):
            raise ValueError(f"X: expected (clips, bands, dim) or (clips, dim), got shape {tuple(X.shape)}.")
        x = prepare(X, "X", ndim=X.ndim, allow_empty=not fitting).data
        x = torch.from_numpy(np.require(x, requirements="W")) if isinstance(x, np.ndarray) else x  # read-only: copied
        if x.ndim == 2:
            x = x[:, None, :]
        if fitting and x.shape[0] < 2:
            raise ValueError(f"X: {x.shape[0]} sample(s); the leave-one-out train scores need at least 2.")
        if x.shape[-1] == 0 or x.shape[1] == 0:
            raise ValueError(f"X: no features (shape {tuple(X.shape)}).")
        if not fitting and (x.shape[1], x.shape[2]) != self.memory_.shape[::2]:
            raise ValueError(f"X has {x.shape[1]} band(s) of {x.shape[2]} features ({x.shape[1] * x.shape[2]} "
                             f"features), but {type(self).__name__} is expecting {self.n_bands_} x "
                             f"{self.memory_.shape[2]} ({self.n_features_in_} features) as input (the number it "
                             "was fitted with).")
        return x

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, *, domain=None) -> "BandMemoryScorer":
        """Memory, densities, α and the leave-one-out train scores of the rows of X (y and domain: unused)."""
        k = check_int(self, "n_density_neighbors", 1)
        varmin = check_bool(self, "varmin")
        x = self._check_X(X, fitting=True)
        domain_masks(domain, x.shape[0])  # checked like the other scorers' labels
        unit = unit_bands(x)  # (F, R, D)
        bands, refs = unit.shape[0], unit.shape[1]
        k_eff = min(k, refs - 1)
        density = torch.zeros(bands, refs, dtype=unit.dtype, device=unit.device)
        kth = torch.zeros_like(density)  # the k-th and (k+1)-th smallest distances to the others
        next_kth = torch.zeros_like(density)
        nearest = torch.zeros(bands, refs, dtype=torch.long, device=unit.device)
        raw = torch.zeros_like(density)
        for rows in _chunks(refs, bands, refs):  # pass 1: densities and leave-one-out nearest neighbours
            d = self._self_distances(unit, rows)
            raw[:, rows], nearest[:, rows] = d.min(dim=2)
            smallest = torch.topk(d, min(k_eff + 1, refs - 1), dim=2, largest=False).values
            density[:, rows] = smallest[..., :k_eff].mean(dim=2)
            kth[:, rows] = smallest[..., k_eff - 1]
            next_kth[:, rows] = smallest[..., min(k_eff, refs - 2)]
        alpha = torch.zeros(bands, dtype=unit.dtype, device=unit.device)
        if varmin:
            matched = torch.gather(density, 1, nearest)  # b of the neighbour each clip matched
            var = matched.var(dim=1, unbiased=False)
            cov = ((raw - raw.mean(1, keepdim=True)) * (matched - matched.mean(1, keepdim=True))).mean(1)
            alpha = torch.where(var > VAR_EPS, cov / torch.where(var > VAR_EPS, var, torch.ones_like(var)), alpha)
        rescaled = raw.clone()
        if varmin:
            for rows in _chunks(refs, bands, refs):  # pass 2: rescaled scores against the memory without the clip
                d = self._self_distances(unit, rows)
                loo = d - alpha[:, None, None] * self._density_without(d, density, kth, next_kth, k_eff, refs)
                rescaled[:, rows] = _without_self(loo, rows).min(dim=2).values
        self.memory_ = unit.cpu().numpy()
        self.density_ = density.T.cpu().numpy()
        self.alpha_ = alpha.cpu().numpy()
        self.n_bands_ = bands
        self.n_features_in_ = bands * unit.shape[2]
        self._train_raw_band_scores = raw.T.double().cpu().numpy()
        self._train_band_scores = rescaled.T.double().cpu().numpy()
        return self

    STATE = ("memory_", "density_", "alpha_", "_train_band_scores", "_train_raw_band_scores")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays, for a file (the beam system's machine state); from_state_arrays restores them."""
        require_fitted(self, "memory_", "state_arrays()")
        return {name.strip("_"): np.asarray(getattr(self, name)) for name in self.STATE}

    @classmethod
    def from_state_arrays(cls, arrays, n_density_neighbors: int = 4, varmin: bool = True) -> "BandMemoryScorer":
        """A fitted scorer from state_arrays() and the parameters it was fitted with."""
        scorer = cls(n_density_neighbors=n_density_neighbors, varmin=varmin)
        for name in cls.STATE:
            setattr(scorer, name, np.asarray(arrays[name.strip("_")]))
        scorer.n_bands_ = scorer.memory_.shape[0]
        scorer.n_features_in_ = scorer.memory_.shape[0] * scorer.memory_.shape[2]
        return scorer

    @property
    def train_scores_(self) -> np.ndarray:
        """(refs,) float64 leave-one-out scores of the train rows, in fit order (the mean of train_band_scores_)."""
        return self.train_band_scores_.mean(axis=1)

    @property
    def train_band_scores_(self) -> np.ndarray:
        """(refs, bands) leave-one-out rescaled band scores (raw ones without VarMin); a copy."""
        require_fitted(self, "memory_", "reading train_scores_")
        return self._train_band_scores.copy()

    @property
    def train_raw_band_scores_(self) -> np.ndarray:
        """(refs, bands) leave-one-out raw BEAM band scores; a copy."""
        require_fitted(self, "memory_", "reading train_raw_band_scores_")
        return self._train_raw_band_scores.copy()

    @staticmethod
    def _self_distances(unit: torch.Tensor, rows: slice) -> torch.Tensor:
        """(F, len(rows), R) band distances of memory rows to the whole memory, +inf at each row's own entry."""
        d = torch.baddbmm(torch.full((), 0.5, dtype=unit.dtype, device=unit.device), unit[:, rows],
                          unit.transpose(1, 2), alpha=-0.5)
        return _without_self(d, rows)

    @staticmethod
    def _density_without(d, density, kth, next_kth, k_eff, refs):
        """b[i] of each reference i with the clip j of the row left out of the memory (F, rows, R).

        j is among i's k nearest when D(i, j) <= its k-th smallest distance: its place goes to the (k+1)-th.
        With no (k+1)-th (R - 1 <= k) the mean runs over the R - 2 others left (0 when none is).
        """
        b, kth, next_kth = density[:, None, :], kth[:, None, :], next_kth[:, None, :]
        if refs - 1 > k_eff:  # R - 1 >= k + 1
            return b + torch.where(d <= kth, (next_kth - d) / k_eff, torch.zeros_like(d))
        if refs <= 2:
            return torch.zeros_like(d)
        return (k_eff * b - d) / (refs - 2)

    # ------------------------------------------------------------------ scores
    def band_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(raw, rescaled), float64 (N, bands): min_i D(x_f, y_i,f) and min_i (D − α_f b[i, f]) (equal without
        VarMin). One GEMM per band and chunk, on X's device."""
        require_fitted(self, "memory_", "band_scores(X)")
        x = self._check_X(X, fitting=False)
        query = unit_bands(x)
        memory = torch.from_numpy(self.memory_).to(device=query.device, dtype=query.dtype)
        offset = torch.from_numpy(self.alpha_[:, None] * self.density_.T).to(query)[:, None, :]  # (F, 1, R)
        raw = torch.zeros(query.shape[:2], dtype=query.dtype, device=query.device)
        rescaled = torch.zeros_like(raw)
        for rows in _chunks(query.shape[1], *memory.shape[:2]):
            d = torch.baddbmm(torch.full((), 0.5, dtype=query.dtype, device=query.device), query[:, rows],
                              memory.transpose(1, 2), alpha=-0.5)
            raw[:, rows] = d.min(dim=2).values
            rescaled[:, rows] = (d - offset).min(dim=2).values
        return raw.T.double().cpu().numpy(), rescaled.T.double().cpu().numpy()

    def score_samples(self, X) -> np.ndarray:
        """(N,) float64: the mean over bands of the rescaled band scores (raw ones without VarMin).

        DCASE sign: higher = more anomalous, the opposite of scikit-learn's outlier detectors.
        """
        require_fitted(self, "memory_", "score_samples(X)")
        return self.band_scores(X)[1].mean(axis=1)


__all__ = ["BandMemoryScorer", "augmented_vectors", "unit_bands"]
