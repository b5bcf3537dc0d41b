"""Gamma fit of anomaly scores and its quantile (official baseline, nttcslab/dcase2023_task2_baseline_ae).

The decision threshold built on it is asdx.scoring.threshold.GammaThreshold; the special
functions the fit runs on are exposed in asdx.scoring.special.

The DCASE baseline fits ``scipy.stats.gamma.fit(scores)`` (shape, loc, scale all
free) to the training scores and declares a test score anomalous when it is
strictly above ``gamma.ppf(0.9, shape, loc, scale)``. This module does the same
maximum-likelihood fit and quantile in asdx's own C++/CUDA kernels, one set or
many sets (e.g. every machine) per call, or in their torch implementation where asdx.kernels
chooses it (ASDX_KERNELS; docs/kernels.md).

Free location (``loc=None``), method="auto" (the default):

- From MIN_MLE_SCORES (20) scores on, the interior local maximum of the likelihood, reached as
  scipy's optimiser reaches it, uphill from the method-of-moments start. The search runs on
  the profile in loc (for a fixed loc the shape/scale MLE solves
  ln a - digamma(a) = ln mean(y) - mean(ln y), y = scores - loc). Every interior maximum has
  shape > 1. Where scipy's fit is interior the thresholds agree (the fixtures to 1e-5;
  100 of 100 benchmark sets to 1e-3); where scipy's Nelder-Mead stops short, ours is the
  more likely. Symmetric or left-skewed sets end at a gap of 1e4 (max - min) below the
  minimum, where the gamma is a normal to ~1e-9.
- The likelihood is unbounded as loc -> min(scores) once the shape falls below 1 (Smith
  1985, Biometrika 72:67-90): that boundary "maximum" is a spike, not a fit, and is never
  returned. Where the profile rises all the way to it (J-shaped sets: gamma shape <= 1, long
  tails; 60 % of 46-score sets in benchmarks/calibration_gamma.py), and below MIN_MLE_SCORES
  scores, the parameters are the maximum product of spacings estimate (MPS: Cheng & Amin
  1983, J. R. Stat. Soc. B 45:394-403), which is well-posed exactly there. ``method`` says
  which estimate a set got ("mle" or "mps").

Why MPS (benchmarks/calibration_gamma.py, docs/threshold.md): on the sets without an interior
maximum, drawn from 13 distributions at n = 3 ... 300, fresh draws from the same distribution
exceed MPS's 0.9 quantile 0.084-0.100 of the time on average, closest to 0.10 at every n, with
the smallest spread; a two-parameter fit with loc one spacing below the minimum, the method of
moments and the empirical quantile give 0.10-0.26, the conformal quantile 0.06-0.22, scipy's
fit 0.12-0.43. Why MIN_MLE_SCORES: on 3-15 scores even an interior maximum is too optimistic
(0.13-0.27 exceed it; MPS on the same sets 0.09-0.19).

The spacings fit runs in C++ on the CPU (it sorts the set); for CUDA input the sets that need
it are refitted on the host. method="mle" returns the interior maximum only (status 5 where
there is none); method="mps" the spacings fit always.

Fixed location (``loc=0.0`` etc.): the exact two-parameter MLE; every score must be
above loc.

Per-set status codes (``STATUS``): 0 ok; 1 fewer than 3 scores; 2 all scores equal;
3 a NaN or inf among the scores; 4 loc fixed and some score <= loc; 5 no interior
maximum (method="mle"), or fewer than 3 distinct scores for the spacings fit. The fitted
parameters are NaN unless the status is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from asdx._cuda import launch_on
from asdx import torch_kernels
from asdx._arrays import like_input, prepare
from asdx._native import _C, follow_torch_threads
from asdx.kernels import dispatch

STATUS = {0: "ok", 1: "too few scores (< 3)", 2: "constant scores", 3: "non-finite scores",
          4: "scores at or below the fixed loc",
          5: "no interior likelihood maximum (method='mle'), or fewer than 3 distinct scores for the spacings fit"}
MIN_SCORES = 3
# Below this many scores method="auto" uses the spacings fit even where the likelihood has an
# interior maximum: on 3-15 scores that maximum puts the 0.9 quantile where 13-27 % of fresh
# draws exceed it, MPS 9-19 % on the same sets (benchmarks/calibration_gamma.py). From 20 on,
# the official protocol's MLE is kept where it exists (12 % at n = 20, 11 % at 46).
MIN_MLE_SCORES = 20
# How a set's parameters were estimated: GammaFitBatch.method holds the index into METHODS.
METHODS = ("none", "mle", "mps")
FIT_METHODS = ("auto", "mle", "mps")
_NO_INTERIOR = 5  # the kernel's status for "no interior maximum" (or no spacings fit)


class GammaFitWarning(UserWarning):
    """A score set could not be fitted and a documented fallback was used."""


@dataclass(frozen=True)
class GammaFit:
    """One set's fit. Parameters are NaN unless status == 0 (see STATUS); method is "mle" (the
    interior maximum of the likelihood), "mps" (maximum product of spacings, where the
    likelihood has none) or "none" (no fit)."""

    shape: float
    loc: float
    scale: float
    loglik: float
    status: int
    method: str = "mle"

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
    the input's device). status is int32; method is int8, an index into METHODS."""

    shape: np.ndarray | torch.Tensor
    loc: np.ndarray | torch.Tensor
    scale: np.ndarray | torch.Tensor
    loglik: np.ndarray | torch.Tensor
    status: np.ndarray | torch.Tensor
    method: np.ndarray | torch.Tensor

    def __len__(self) -> int:
        return int(self.status.shape[0])

    def __getitem__(self, index: int) -> GammaFit:
        return GammaFit(float(self.shape[index]), float(self.loc[index]), float(self.scale[index]),
                        float(self.loglik[index]), int(self.status[index]), METHODS[int(self.method[index])])


def check_loc(loc) -> tuple[bool, float]:
    """(fixed, value) of a loc argument: (False, 0.0) for None (free), (True, loc) for a finite number;
    ValueError naming loc otherwise."""
    if loc is None:
        return False, 0.0
    try:
        value = float(loc)
    except (TypeError, ValueError) as error:
        raise ValueError(f"loc: must be None (free) or a finite number, got {loc!r}.") from error
    if not math.isfinite(value):
        raise ValueError(f"loc: must be None (free) or a finite number, got {loc!r}.")
    return True, value


def _method_argument(method, fixed: bool) -> None:
    if method not in FIT_METHODS:
        raise ValueError(f"method: must be one of {', '.join(map(repr, FIT_METHODS))}, got {method!r}.")
    if fixed and method == "mps":
        raise ValueError("method: 'mps' fits a free location; with loc fixed the fit is the exact MLE "
                         "(method='auto' or 'mle').")


def fit_gamma(scores, loc: float | None = None, method: str = "auto") -> GammaFit:
    """Gamma fit of one score set (numpy array, list or tensor).

    loc=None fits shape, loc and scale; a number fixes the location (scipy's floc: the exact
    two-parameter MLE). With loc free, method picks the estimate (module docstring):
    "auto" (default) the interior likelihood maximum, as scipy.stats.gamma.fit(scores) finds
    it, from MIN_MLE_SCORES scores on, else the maximum product of spacings; "mle" only
    the interior maximum (status 5 where there is none); "mps" always the spacings fit.
    Raises ValueError naming `scores` when it is empty, not 1-D or holds NaN/inf, and when
    loc is fixed and some score is <= loc. Fewer than 3 scores or constant scores return a
    GammaFit with status 1 or 2 and NaN parameters (GammaThreshold then uses the conformal
    quantile).
    """
    fixed, loc_value = check_loc(loc)
    _method_argument(method, fixed)
    data = prepare(scores, "scores", ndim=1, dtype=np.float64, allow_empty=False).numpy()
    result = fit_sets(data, np.array([0, data.size], dtype=np.int64), fixed, loc_value, method)[0]
    if result.status == 4:
        raise ValueError(f"scores: with loc fixed at {loc_value!r} every score must be > loc; "
                         f"the minimum is {float(data.min())!r}.")
    return result


def fit_gamma_batch(score_sets, loc: float | None = None, method: str = "auto") -> GammaFitBatch:
    """Fits many score sets in one kernel call (sets in parallel; one CUDA block per set).

    score_sets: a sequence of 1-D arrays/tensors (ragged), or a 2-D array/tensor whose rows
    are equal-length sets; loc and method as in fit_gamma, which gives each set the same
    result. CUDA tensors run the CUDA kernel and return tensors on that device (the spacings
    fits run on the host); torch CPU tensors return torch tensors; anything else returns
    numpy arrays. A bad set does not fail the batch: its status says why (STATUS) and its
    parameters are NaN. Raises ValueError for input that is not a set of numbers at all.
    """
    fixed, loc_value = check_loc(loc)
    _method_argument(method, fixed)
    values, offsets, reference = _flatten(score_sets)
    batch = fit_sets(values, offsets, fixed, loc_value, method)
    if isinstance(values, torch.Tensor) and values.is_cuda:
        return batch
    if reference is not None and reference.is_torch:
        batch = GammaFitBatch(*[torch.from_numpy(getattr(batch, f.name)) for f in fields(batch)])
    return batch


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


def fit_sets(values, offsets, fixed: bool, loc: float, method: str = "auto") -> GammaFitBatch:
    """Fits the sets values[offsets[s]:offsets[s + 1]]: the one entry of fit_gamma, fit_gamma_batch and
    GammaThreshold, so they agree. values: float64 1-D, host numpy (numpy results) or a CUDA tensor (with
    offsets on its device; tensor results there); fixed, loc: from check_loc; method: FIT_METHODS.
    Native CPU / CUDA kernel or the torch implementation, as asdx.kernels chooses."""
    on_cuda = isinstance(values, torch.Tensor) and values.is_cuda

    def torch_path():
        data = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values))
        results = torch_kernels.fit_sets(data, offsets, fixed, loc, method, MIN_MLE_SCORES)
        return GammaFitBatch(*(results if on_cuda else [r.cpu().numpy() for r in results]))

    return dispatch("gamma", values.device if on_cuda else None, lambda: _fit_cpu(values, offsets, fixed, loc, method),
                    lambda: _fit_cuda(values, offsets, fixed, loc, method), torch_path)


def _fit_cpu(values: np.ndarray, offsets: np.ndarray, fixed: bool, loc: float, method: str = "auto") -> GammaFitBatch:
    """The native C++ fit, spacings fits included."""
    follow_torch_threads()
    return GammaFitBatch(*_C.gamma_fit_cpu(values, offsets, fixed, loc, FIT_METHODS.index(method), MIN_MLE_SCORES))


def _fit_cuda(values: torch.Tensor, offsets: torch.Tensor, fixed: bool, loc: float, method: str) -> GammaFitBatch:
    device = values.device
    n_sets = int(offsets.numel()) - 1
    with launch_on(device, "fit_gamma_batch") as stream:
        outputs = [torch.empty(n_sets, dtype=torch.float64, device=device) for _ in range(4)]
        status = torch.empty(n_sets, dtype=torch.int32, device=device)
        chosen = torch.empty(n_sets, dtype=torch.int8, device=device)
        if n_sets > 0:
            values = values.contiguous()
            offsets = offsets.contiguous()
            _C.gamma_fit_cuda(values.data_ptr(), offsets.data_ptr(), n_sets, fixed, loc,
                              *[o.data_ptr() for o in outputs], status.data_ptr(), chosen.data_ptr(), stream)
    batch = GammaFitBatch(*outputs, status, chosen)
    if fixed or method == "mle" or n_sets == 0:
        return batch
    # The CUDA kernel fits the likelihood only; the sets that `method` gives the spacings fit
    # (which sorts each set; the rule of fit_cpu in csrc/cpu/gamma.cpp) are refitted on the host.
    # Finding them costs one device sync.
    host_offsets = offsets.cpu().numpy()
    lengths, host_status = np.diff(host_offsets), status.cpu().numpy()
    fittable = (host_status == 0) | (host_status == _NO_INTERIOR)
    redo = fittable if method == "mps" else (host_status == _NO_INTERIOR) | (fittable & (lengths < MIN_MLE_SCORES))
    redo = np.flatnonzero(redo)
    if redo.size:
        parts = [values[host_offsets[s]:host_offsets[s + 1]].cpu().numpy() for s in redo]
        refit = _fit_cpu(np.concatenate(parts), np.concatenate([[0], np.cumsum(lengths[redo])]).astype(np.int64),
                         False, 0.0, "mps")
        index = torch.from_numpy(redo).to(device)
        for name in ("shape", "loc", "scale", "loglik", "status", "method"):
            getattr(batch, name)[index] = torch.from_numpy(getattr(refit, name)).to(device)
    return batch


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
    device = torch_inputs[0].data.device if torch_inputs and torch_inputs[0].on_cuda else None

    def native_cuda():
        with launch_on(device, "gamma_ppf") as stream:
            tensors = [torch.from_numpy(a).to(device) for a in flat]
            out = torch.empty(flat[0].size, dtype=torch.float64, device=device)
            if out.numel() > 0:
                _C.gamma_ppf_cuda(*[t.data_ptr() for t in tensors], out.numel(), out.data_ptr(), stream)
        return out.reshape(out_shape)

    def native_cpu():
        follow_torch_threads()
        return _C.gamma_ppf_cpu(*flat).reshape(out_shape)

    def torch_path():
        out = torch_kernels.gamma_ppf(*[torch.from_numpy(a).to(device or "cpu") for a in flat]).reshape(out_shape)
        return out if device is not None else out.numpy()

    result = dispatch("gamma", device, native_cpu, native_cuda, torch_path)
    if device is not None:
        return result
    if torch_inputs:
        return like_input(result, torch_inputs[0])
    return float(result) if result.ndim == 0 else result
