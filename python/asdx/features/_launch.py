"""Dispatch of the frontend kernels: native CPU kernel on host data, native CUDA kernel on CUDA tensors, or
their torch implementation, as asdx.kernels chooses."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch

from asdx._arrays import Waveform
from asdx._cuda import device_table, launch_on
from asdx._native import _C, follow_torch_threads
from asdx.kernels import dispatch

PRECISIONS = ("float64", "float32")


def check_precision(precision: str) -> bool:
    """True for the float32 FFT path. float64 is the default: the golden fixtures need it (asdx/fft.h says why)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be 'float64' or 'float32', got {precision!r}.")
    return precision == "float32"


@functools.lru_cache(maxsize=64)
def _host_tables(kind: str, params: tuple) -> tuple[np.ndarray, tuple[int, ...]]:
    builder = {"logmel": _C.logmel_tables, "kaldi": _C.kaldi_tables}[kind]
    blob, offsets = builder(*params)
    return blob, tuple(offsets)


def run_frontend(
    wave: Waveform,
    kernel_name: str,
    out_shapes: Sequence[tuple[int, ...]],
    cpu_call: Callable[[np.ndarray], Sequence[np.ndarray]],
    cuda_call: Callable[..., None],
    tables: tuple[str, tuple],
    torch_call: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    family: str = "frontend",
):
    """Runs the frontend's native CPU or CUDA kernel, or its torch implementation (asdx.kernels.dispatch);
    returns outputs in the input's kind and on its device.

    cpu_call(data) returns arrays in the kernel's own layout (reshaped to out_shapes here).
    cuda_call(input_ptr, *output_ptrs, tables_ptr, table_offsets, stream) writes into outputs
    allocated here; tables = (kind, builder parameters) names the constant tables, which are
    uploaded once per (configuration, device) and then reused. torch_call(tensor) returns
    float32 tensors in out_shapes on the tensor's device. family: the asdx.kernels family that dispatches.
    """
    device = wave.data.device if wave.is_torch else None

    def native_cuda():
        outputs = [torch.empty(shape, dtype=torch.float32, device=device) for shape in out_shapes]
        if all(o.numel() > 0 for o in outputs):
            with launch_on(device, kernel_name) as stream:
                blob, offsets = _host_tables(*tables)
                table = device_table(tables, device, lambda: blob)
                cuda_call(wave.data.data_ptr(), *[o.data_ptr() for o in outputs], table.data_ptr(), list(offsets),
                          stream)
        return outputs

    def native_cpu():
        data = wave.data.numpy() if wave.is_torch else wave.data
        follow_torch_threads()
        return [np.asarray(a).reshape(shape) for a, shape in zip(cpu_call(data), out_shapes)]

    def torch_path():
        data = wave.data if wave.is_torch else torch.from_numpy(wave.data)
        return [out.reshape(shape) for out, shape in zip(torch_call(data), out_shapes)]

    outputs = dispatch(family, device, native_cpu, native_cuda, torch_path)
    if wave.finite_mask is not None:
        for out in outputs:
            # the device-side finiteness check: a non-finite clip's features become NaN, in stream order
            out.masked_fill_(~wave.finite_mask.reshape(-1, *[1] * (out.ndim - 1)), float("nan"))
    if wave.is_torch:
        return [torch.as_tensor(out) for out in outputs]
    return [out.numpy() if isinstance(out, torch.Tensor) else out for out in outputs]
