"""Gamma fit of anomaly scores and its quantile (official baseline, nttcslab/dcase2023_task2_baseline_ae).

The decision threshold built on it is asdx.scoring.threshold.GammaThreshold; the special
functions the fit runs on are exposed in asdx.scoring.special.

The DCASE baseline fits ``scipy.stats.gamma.fit(scores)`` (shape, loc, scale all
free) to the training scores and declares a test score anomalous when it is
strictly above ``gamma.ppf(0.9, shape, loc, scale)``. This module does the same
maximum-likelihood fit and quantile in asdx's own C++/CUDA kernels, one set or
many sets (e.g. every machine) per call.

Free location (``loc=None``): the log-likelihood is maximised over loc < min(scores)
through its profile in loc (for a fixed loc the shape/scale MLE solves
ln a - digamma(a) = ln mean(y) - mean(ln y), y = scores - loc). That likelihood is
unbounded as loc -> min(scores) once the shape falls below 1, so the candidates are
the largest double below min(scores) (where scipy's optimiser ends on such sets) and
the local maximum reached uphill from the method-of-moments start; the better one
wins. Symmetric or left-skewed sets end at a gap of 1e4 (max - min) below the
minimum, where the gamma is a normal to ~1e-9. The result's log-likelihood is never
below scipy's on the golden fixtures and is often above it: scipy's Nelder-Mead
stops short of the maximum.

Fixed location (``loc=0.0`` etc.): the exact two-parameter MLE; every score must be
above loc.

Per-set status codes (``STATUS``): 0 ok; 1 fewer than 3 scores; 2 all scores equal;
3 a NaN or inf among the scores; 4 loc fixed and some score <= loc. The fitted
parameters are NaN unless the status is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from asdx._cuda import launch_on
from asdx._native import _C, follow_torch_threads
from asdx._arrays import like_input, prepare

STATUS = {0: "ok", 1: "too few scores (< 3)", 2: "constant scores", 3: "non-finite scores",
          4: "scores at or below the fixed loc"}
MIN_SCORES = 3


class GammaFitWarning(UserWarning):
    """A score set could not be fitted and a documented fallback was used."""


@dataclass(frozen=True)
class GammaFit:
    """One set's fit. Parameters are NaN unless status == 0 (see STATUS)."""

    shape: float
    loc: float
    scale: float
    loglik: float
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0

    def ppf(self, q: float) -> float:
        """Quantile of the fitted distribution (NaN when the fit failed)."""
        if not self.ok:
            return math.nan
        return float(gamma_ppf(q, self.shape, self.loc, self.scale))


@dataclass(frozen=True)
class GammaFitBatch:
    """Per-set results of fit_gamma_batch: arrays of length n_sets (numpy, or torch on
    the input's device). status is int32."""

    shape: np.ndarray | torch.Tensor
    loc: np.ndarray | torch.Tensor
    scale: np.ndarray | torch.Tensor
    loglik: np.ndarray | torch.Tensor
    status: np.ndarray | torch.Tensor

    def __len__(self) -> int:
        return int(self.status.shape[0])

    def __getitem__(self, index: int) -> GammaFit:
        return GammaFit(float(self.shape[index]), float(self.loc[index]), float(self.scale[index]),
                        float(self.loglik[index]), int(self.status[index]))


def _loc_arguments(loc) -> tuple[bool, float]:
    if loc is None:
        return False, 0.0
    try:
        value = float(loc)
    except (TypeError, ValueError) as error:
        raise ValueError(f"loc: must be None (free) or a finite number, got {loc!r}.") from error
    if not math.isfinite(value):
        raise ValueError(f"loc: must be None (free) or a finite number, got {loc!r}.")
    return True, value


def fit_gamma(scores, loc: float | None = None) -> GammaFit:
    """Maximum-likelihood gamma fit of one score set (numpy array, list or tensor).

    loc=None fits shape, loc and scale (scipy.stats.gamma.fit(scores)); a number fixes
    the location (scipy's floc). Raises ValueError naming `scores` when it is empty,
    not 1-D or holds NaN/inf, and when loc is fixed and some score is <= loc. Fewer
    than 3 scores or constant scores return a GammaFit with status 1 or 2 and NaN
    parameters (GammaThreshold then falls back to the maximum score).
    """
    fixed, loc_value = _loc_arguments(loc)
    data = prepare(scores, "scores", ndim=1, dtype=np.float64, allow_empty=False).numpy()
    result = _fit_cpu(data, np.array([0, data.size], dtype=np.int64), fixed, loc_value)[0]
    if result.status == 4:
        raise ValueError(f"scores: with loc fixed at {loc_value!r} every score must be > loc; "
                         f"the minimum is {float(data.min())!r}.")
    return result


def fit_gamma_batch(score_sets, loc: float | None = None) -> GammaFitBatch:
    """Fits many score sets in one kernel call (sets in parallel; one CUDA block per set).

    score_sets: a sequence of 1-D arrays/tensors (ragged), or a 2-D array/tensor whose rows
    are equal-length sets. CUDA tensors run the CUDA kernel and return tensors on that
    device; torch CPU tensors return torch tensors; anything else returns numpy arrays.
    A bad set does not fail the batch: its status says why (STATUS) and its parameters
    are NaN. Raises ValueError for input that is not a set of numbers at all.
    """
    fixed, loc_value = _loc_arguments(loc)
    values, offsets, reference = _flatten(score_sets)
    if isinstance(values, torch.Tensor) and values.is_cuda:
        return _fit_cuda(values, offsets, fixed, loc_value)
    follow_torch_threads()
    arrays = _C.gamma_fit_cpu(values, offsets, fixed, loc_value)
    if reference is not None and reference.is_torch:
        arrays = [torch.from_numpy(a) for a in arrays]
    return GammaFitBatch(*arrays)


def _flatten(score_sets):
    """Returns (values float64 1-D, offsets int64, a Prepared of the input or None)."""
    if isinstance(score_sets, (np.ndarray, torch.Tensor)):
        sets = prepare(score_sets, "score_sets", ndim=2, dtype=np.float64, finite=False)
        n_sets, length = sets.shape
        values = sets.data.reshape(-1)
        if sets.on_cuda:
            offsets = torch.arange(n_sets + 1, dtype=torch.int64, device=values.device) * length
        else:
            values = sets.numpy().reshape(-1)
            offsets = np.arange(n_sets + 1, dtype=np.int64) * length
        return values, offsets, sets
    if not isinstance(score_sets, Sequence):
        raise ValueError(f"score_sets: expected a sequence of 1-D score arrays or a 2-D array, "
                         f"got {type(score_sets).__name__}.")
    parts = [prepare(s, f"score_sets[{i}]", ndim=1, dtype=np.float64, finite=False)
             for i, s in enumerate(score_sets)]
    devices = {str(p.data.device) if p.is_torch else "numpy" for p in parts}
    if len(devices) > 1:
        raise ValueError(f"score_sets: all sets must live on one device, got {sorted(devices)}.")
    lengths = np.array([p.shape[0] for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if parts and parts[0].on_cuda:
        values = torch.cat([p.data for p in parts])
        return values, torch.from_numpy(offsets).to(values.device), parts[0]
    values = np.concatenate([p.numpy() for p in parts]) if parts else np.zeros(0)
    return np.ascontiguousarray(values, dtype=np.float64), offsets, parts[0] if parts else None


def _fit_cpu(values: np.ndarray, offsets: np.ndarray, fixed: bool, loc: float) -> GammaFitBatch:
    follow_torch_threads()
    return GammaFitBatch(*_C.gamma_fit_cpu(values, offsets, fixed, loc))


def _fit_cuda(values: torch.Tensor, offsets: torch.Tensor, fixed: bool, loc: float) -> GammaFitBatch:
    device = values.device
    n_sets = int(offsets.numel()) - 1
    with launch_on(device, "fit_gamma_batch") as stream:
        outputs = [torch.empty(n_sets, dtype=torch.float64, device=device) for _ in range(4)]
        status = torch.empty(n_sets, dtype=torch.int32, device=device)
        if n_sets > 0:
            values = values.contiguous()
            offsets = offsets.contiguous()
            _C.gamma_fit_cuda(values.data_ptr(), offsets.data_ptr(), n_sets, fixed, loc,
                              *[o.data_ptr() for o in outputs], status.data_ptr(), stream)
    return GammaFitBatch(*outputs, status)


def gamma_ppf(q, shape, loc, scale):
    """Gamma quantile loc + scale * P^{-1}(shape, q), element-wise with numpy broadcasting.

    Matches scipy.stats.gamma.ppf. Raises ValueError naming the argument for q outside
    [0, 1], shape or scale <= 0, or non-finite values. Returns a float for scalar
    inputs, else an array in the kind (numpy / torch, device) of the first tensor given.
    """
    named = {"q": q, "shape": shape, "loc": loc, "scale": scale}
    hosts, torch_inputs = {}, []
    for name, value in named.items():
        if isinstance(value, torch.Tensor):
            torch_inputs.append(prepare(value, name, ndim=value.ndim, dtype=np.float64))
            value = torch_inputs[-1].numpy()
        try:
            host = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: cannot be read as numbers ({error}).") from error
        if not np.all(np.isfinite(host)):
            raise ValueError(f"{name}: contains NaN or inf.")
        hosts[name] = host
    if np.any((hosts["q"] < 0) | (hosts["q"] > 1)):
        raise ValueError("q: probabilities must lie in [0, 1].")
    if np.any(hosts["shape"] <= 0):
        raise ValueError("shape: must be > 0.")
    if np.any(hosts["scale"] <= 0):
        raise ValueError("scale: must be > 0.")
    try:
        arrays = np.broadcast_arrays(*hosts.values())
    except ValueError as error:
        raise ValueError(f"q, shape, loc, scale: shapes do not broadcast ({error}).") from error
    out_shape = arrays[0].shape
    flat = [np.ascontiguousarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    if torch_inputs and torch_inputs[0].on_cuda:
        device = torch_inputs[0].data.device
        with launch_on(device, "gamma_ppf") as stream:
            tensors = [torch.from_numpy(a).to(device) for a in flat]
            out = torch.empty(flat[0].size, dtype=torch.float64, device=device)
            if out.numel() > 0:
                _C.gamma_ppf_cuda(*[t.data_ptr() for t in tensors], out.numel(), out.data_ptr(), stream)
        return out.reshape(out_shape)
    follow_torch_threads()
    result = _C.gamma_ppf_cpu(*flat).reshape(out_shape)
    if torch_inputs:
        return like_input(result, torch_inputs[0])
    return float(result) if result.ndim == 0 else result
