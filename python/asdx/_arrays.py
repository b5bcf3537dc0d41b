"""The one validation layer of asdx's public kernels: audio for the frontends,
matrices and vectors for the scorers and nearest-neighbour banks.

Inputs are numpy arrays or torch tensors. They are checked once here, at the
public boundary, with messages that name the argument (and the batch index);
kernels then see contiguous float32 audio or float32/float64 matrices.

Finiteness: host data is checked here and refused with a ValueError. Checking
a CUDA tensor for NaN/inf and raising would need its answer on the host, a
device sync on every call; so by default CUDA audio is checked on the device
instead, in stream order, and the features of a non-finite clip come back as
NaN (`check_finite=None`). `check_finite=True` raises for CUDA input too, at
the cost of that one sync; `False` skips the check (non-finite samples then
give unspecified features for their clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_TORCH_TO_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


@dataclass(frozen=True)
class Waveform:
    """A validated audio batch: `data` is float32, contiguous, (batch, channels, samples).

    finite_mask: for CUDA input checked on the device, a (batch,) bool tensor on that device
    (no host sync); None when the data was checked on the host or not at all.
    """

    data: np.ndarray | torch.Tensor
    is_torch: bool
    finite_mask: torch.Tensor | None = None

    @property
    def on_cuda(self) -> bool:
        return self.is_torch and self.data.is_cuda

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]


def _check_audio_dtype(name: str, dtype_name: str, is_float: bool, is_integer: bool) -> None:
    if is_float:
        return
    if is_integer:
        raise ValueError(
            f"{name}: dtype {dtype_name} is integer or boolean PCM; convert it to float audio in [-1, 1] "
            "first (e.g. int16 / 32768)."
        )
    raise ValueError(f"{name}: dtype {dtype_name} cannot be converted to float32 audio.")


def _raise_non_finite(name: str, finite: np.ndarray) -> None:
    bad = np.flatnonzero(~finite)
    listed = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
    raise ValueError(
        f"{name}[{bad[0]}]: contains NaN or inf (batch index {bad[0]}; {bad.size} bad item(s): {listed})."
    )


def prepare_waveform(waveform, name: str = "waveform", channels: int | None = None,
                     check_finite: bool | None = None) -> Waveform:
    """Checks rank, length, dtype and (see the module docstring) finiteness; returns contiguous float32 data."""
    if check_finite not in (None, True, False):
        raise ValueError(f"check_finite: must be None, True or False, got {check_finite!r}.")
    if isinstance(waveform, torch.Tensor):
        _check_audio_dtype(name, str(waveform.dtype), waveform.is_floating_point(),
                           not waveform.is_floating_point() and not waveform.is_complex())
        if waveform.requires_grad and torch.is_grad_enabled():
            # our kernels have no backward: returning a result silently cut off from the graph would train
            # nothing upstream without a word
            raise ValueError(f"{name}: requires grad, but asdx.features kernels are not differentiable; pass "
                             f"{name}.detach() (the features are then constants for autograd).")
        data = waveform.detach()
        is_torch = True
    else:
        try:
            data = np.asarray(waveform)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: cannot be read as an array ({error}).") from error
        _check_audio_dtype(name, str(data.dtype), data.dtype.kind == "f", data.dtype.kind in "iub")
        is_torch = False

    if data.ndim != 3:
        raise ValueError(f"{name}: expected shape (batch, channels, samples), got {tuple(data.shape)} (rank {data.ndim}).")
    batch, n_channels, n_samples = (int(s) for s in data.shape)
    if n_samples == 0:
        raise ValueError(f"{name}: has zero samples (shape {tuple(data.shape)}).")
    if n_channels == 0 or (channels is not None and n_channels != channels):
        expected = f"{channels}" if channels is not None else "at least 1"
        raise ValueError(f"{name}: expected {expected} channels, got shape {tuple(data.shape)}.")

    if not is_torch:
        data = np.ascontiguousarray(data, dtype=np.float32)
        if check_finite is not False:
            finite = np.isfinite(data).reshape(batch, n_channels * n_samples).all(axis=1)
            if not finite.all():
                _raise_non_finite(name, finite)
        return Waveform(data, False)
    data = data.to(torch.float32).contiguous()
    if check_finite is False:
        return Waveform(data, True)
    finite_mask = torch.isfinite(data).reshape(batch, n_channels * n_samples).all(dim=1)
    if data.is_cuda and check_finite is None:
        return Waveform(data, True, finite_mask)  # stays on the device: no sync
    finite = finite_mask.cpu().numpy()
    if not finite.all():
        _raise_non_finite(name, finite)
    return Waveform(data, True)


@dataclass(frozen=True)
class Prepared:
    """A validated array: contiguous, float32 or float64, numpy or torch (any device)."""

    data: np.ndarray | torch.Tensor
    name: str

    @property
    def is_torch(self) -> bool:
        return isinstance(self.data, torch.Tensor)

    @property
    def on_cuda(self) -> bool:
        return self.is_torch and self.data.is_cuda

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def numpy_dtype(self) -> type:
        return _TORCH_TO_NUMPY[self.data.dtype] if self.is_torch else self.data.dtype.type

    def numpy(self) -> np.ndarray:
        """Host view (copies from the GPU)."""
        return self.data.detach().cpu().numpy() if self.is_torch else self.data


def prepare(x, name: str, ndim: int, dtype=None, allow_empty: bool = True, finite: bool = True) -> Prepared:
    """Checks a numeric array; keeps float32/float64 (others become float64 unless dtype is given).

    dtype: np.float32 or np.float64 to force a precision (e.g. to match another argument).
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32,
                                                                        torch.int64, torch.uint8)):
            raise ValueError(f"{name}: dtype {x.dtype} is not a real number type.")
        data = x.detach()
        target = {np.float32: torch.float32, np.float64: torch.float64}.get(dtype) if dtype else (
            data.dtype if data.dtype in _TORCH_TO_NUMPY else torch.float64)
        data = data.to(target).contiguous()
    else:
        try:
            data = np.asarray(x)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: cannot be read as a numeric array ({error}).") from error
        if data.dtype.kind not in "fiu":
            raise ValueError(f"{name}: dtype {data.dtype} is not a real number type.")
        target = dtype if dtype else (data.dtype.type if data.dtype in (np.float32, np.float64) else np.float64)
        data = np.ascontiguousarray(data, dtype=target)
    if data.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(data.shape)}.")
    size = data.numel() if isinstance(data, torch.Tensor) else data.size
    if not allow_empty and size == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(data.shape)}).")
    if finite and size and not _all_finite(data):
        bad = ~torch.isfinite(data) if isinstance(data, torch.Tensor) else ~np.isfinite(data)
        if bool(bad.any()):
            index = tuple(int(i) for i in (torch.nonzero(bad)[0].tolist() if isinstance(data, torch.Tensor)
                                           else np.argwhere(bad)[0]))
            raise ValueError(f"{name}: contains NaN or inf (first at index {index}).")
    return Prepared(data, name)


def _all_finite(data: np.ndarray | torch.Tensor) -> bool:
    """Whether every value of prepare's float32/float64 data is finite, without a boolean array: a NaN
    propagates to the min and the max, and +inf or -inf shows in one of them. isfinite(x).all() writes a
    boolean array first: on 100k x 640 float32 (2 threads) numpy 45 ms against 36 ms, torch 267 ms against
    20 ms (benchmarks/RESULTS.md, issue 25). numpy data stays in numpy: a torch op here would start torch's
    OpenMP pool, which deadlocks in a child forked from a parent that used it (tests/test_threads.py)."""
    if isinstance(data, np.ndarray):
        return bool(np.isfinite(data.min()) and np.isfinite(data.max()))
    low, high = torch.aminmax(data)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def require_same_width(a: Prepared, b: Prepared, axis_a: int = -1, axis_b: int = -1) -> None:
    if a.shape[axis_a] != b.shape[axis_b]:
        raise ValueError(
            f"{b.name}: dimension {b.shape[axis_b]} does not match {a.name}'s {a.shape[axis_a]} "
            f"(shapes {a.shape} and {b.shape})."
        )


def like_input(result: np.ndarray | torch.Tensor, reference: Prepared):
    """Returns result in the kind and on the device of `reference`."""
    if reference.is_torch:
        tensor = result if isinstance(result, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(result))
        return tensor.to(reference.data.device)
    return result.detach().cpu().numpy() if isinstance(result, torch.Tensor) else result


def match_device(x: Prepared, reference: Prepared):
    """x's data where `reference`'s kernel will read it: a torch tensor on reference's CUDA
    device when reference is a CUDA tensor, else a numpy array."""
    if reference.on_cuda:
        tensor = x.data if x.is_torch else torch.from_numpy(np.ascontiguousarray(x.data))
        return tensor.to(reference.data.device).contiguous()
    return x.numpy()


def prepare_binary(x, name: str) -> np.ndarray:
    """A 1-D array of 0/1 values (ints, bools or floats equal to 0 or 1; numpy or torch) as host int8."""
    if isinstance(x, np.ndarray) and x.dtype == np.bool_:
        x = x.astype(np.int8)
    elif isinstance(x, torch.Tensor) and x.dtype == torch.bool:
        x = x.to(torch.int8)
    values = prepare(x, name, ndim=1, dtype=np.float64).numpy()
    bad = (values != 0) & (values != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}: values must be 0 or 1, found {values[i]!r} at index {i}.")
    return values.astype(np.int8)
