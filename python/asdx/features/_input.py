"""Validation and device dispatch shared by the frontend wrappers.

The kernels take contiguous float32 (batch, channels, samples). Users hand us
numpy arrays or torch tensors; results go back in the same kind, on the same
device. All user-facing checks happen here, once, with messages that name the
argument and the offending batch index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from asdx._native import follow_torch_threads, require_cuda_kernels


@dataclass(frozen=True)
class Waveform:
    """A validated batch: `data` is float32, contiguous, (batch, channels, samples)."""

    data: np.ndarray | torch.Tensor
    is_torch: bool

    @property
    def on_cuda(self) -> bool:
        return self.is_torch and self.data.is_cuda

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]


def _check_dtype(name: str, dtype_name: str, is_float: bool, is_integer: bool) -> None:
    if is_float:
        return
    if is_integer:
        raise ValueError(
            f"{name}: dtype {dtype_name} is integer or boolean PCM; convert it to float audio in [-1, 1] "
            "first (e.g. int16 / 32768)."
        )
    raise ValueError(f"{name}: dtype {dtype_name} cannot be converted to float32 audio.")


def prepare_waveform(waveform, name: str = "waveform", channels: int | None = None) -> Waveform:
    """Checks rank, length, dtype and finiteness, then returns contiguous float32 data."""
    if isinstance(waveform, torch.Tensor):
        _check_dtype(name, str(waveform.dtype), waveform.is_floating_point(),
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
        _check_dtype(name, str(data.dtype), data.dtype.kind == "f", data.dtype.kind in "iub")
        is_torch = False

    if data.ndim != 3:
        raise ValueError(f"{name}: expected shape (batch, channels, samples), got {tuple(data.shape)} (rank {data.ndim}).")
    batch, n_channels, n_samples = (int(s) for s in data.shape)
    if n_samples == 0:
        raise ValueError(f"{name}: has zero samples (shape {tuple(data.shape)}).")
    if n_channels == 0 or (channels is not None and n_channels != channels):
        expected = f"{channels}" if channels is not None else "at least 1"
        raise ValueError(f"{name}: expected {expected} channels, got shape {tuple(data.shape)}.")

    if is_torch:
        data = data.to(torch.float32).contiguous()
        finite = torch.isfinite(data).reshape(batch, n_channels * n_samples).all(dim=1).cpu().numpy()
    else:
        data = np.ascontiguousarray(data, dtype=np.float32)
        finite = np.isfinite(data).reshape(batch, n_channels * n_samples).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        listed = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(
            f"{name}[{bad[0]}]: contains NaN or inf (batch index {bad[0]}; {bad.size} bad item(s): {listed})."
        )
    return Waveform(data, is_torch)


def run_kernel(
    waveform: Waveform,
    kernel_name: str,
    out_shapes: Sequence[tuple[int, ...]],
    cpu_call: Callable[[np.ndarray], Sequence[np.ndarray]],
    cuda_call: Callable[..., None],
):
    """Runs the CPU or CUDA kernel by the input's device; returns outputs in the input's kind.

    cpu_call(data) returns arrays in the kernel's own layout (reshaped to out_shapes here);
    cuda_call(input_ptr, *output_ptrs, stream) writes into outputs allocated here.
    """
    if waveform.on_cuda:
        require_cuda_kernels(kernel_name)
        device = waveform.data.device
        outputs = [torch.empty(shape, dtype=torch.float32, device=device) for shape in out_shapes]
        if all(o.numel() > 0 for o in outputs):
            with torch.cuda.device(device):
                stream = torch.cuda.current_stream(device).cuda_stream
                cuda_call(waveform.data.data_ptr(), *[o.data_ptr() for o in outputs], stream)
        return outputs
    data = waveform.data.numpy() if waveform.is_torch else waveform.data
    follow_torch_threads()
    arrays = [np.asarray(a).reshape(shape) for a, shape in zip(cpu_call(data), out_shapes)]
    if waveform.is_torch:
        return [torch.from_numpy(a) for a in arrays]
    return arrays
