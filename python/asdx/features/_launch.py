"""Device dispatch of the frontend kernels: CPU kernel on host data, CUDA kernel on CUDA tensors."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch

from asdx._arrays import Waveform
from asdx._cuda import device_table, launch_on
from asdx._native import _C, follow_torch_threads

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
):
    """Runs the CPU or CUDA kernel by the input's device; returns outputs in the input's kind.

    cpu_call(data) returns arrays in the kernel's own layout (reshaped to out_shapes here).
    cuda_call(input_ptr, *output_ptrs, tables_ptr, table_offsets, stream) writes into outputs
    allocated here; tables = (kind, builder parameters) names the constant tables, which are
    uploaded once per (configuration, device) and then reused.
    """
    if wave.on_cuda:
        device = wave.data.device
        outputs = [torch.empty(shape, dtype=torch.float32, device=device) for shape in out_shapes]
        if all(o.numel() > 0 for o in outputs):
            with launch_on(device, kernel_name) as stream:
                blob, offsets = _host_tables(*tables)
                table = device_table(tables, device, lambda: blob)
                cuda_call(wave.data.data_ptr(), *[o.data_ptr() for o in outputs], table.data_ptr(), list(offsets),
                          stream)
        if wave.finite_mask is not None:
            for out in outputs:
                # the device-side finiteness check: a non-finite clip's features become NaN, in stream order
                out.masked_fill_(~wave.finite_mask.reshape(-1, *[1] * (out.ndim - 1)), float("nan"))
        return outputs
    data = wave.data.numpy() if wave.is_torch else wave.data
    follow_torch_threads()
    arrays = [np.asarray(a).reshape(shape) for a, shape in zip(cpu_call(data), out_shapes)]
    if wave.is_torch:
        return [torch.from_numpy(a) for a in arrays]
    return arrays
