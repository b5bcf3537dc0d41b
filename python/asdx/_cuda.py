"""The CUDA plumbing of asdx's kernels, written once.

The compiled module never links libtorch: it takes raw device pointers and a
cudaStream_t. So every device buffer a kernel touches (outputs, scratch,
constant tables) is a torch tensor from torch's caching allocator, and every
launch goes to the caller's current torch stream on the input's device. A
training loop that runs asdx on a side stream, or on cuda:1, gets exactly that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from asdx._native import require_cuda_kernels

# Constant tables (FFT twiddles, windows, filterbanks) stay on each device they
# were used on; a handful of configurations is the norm, so the bound is generous.
_TABLE_CACHE_SIZE = 64
_tables: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_tables_lock = threading.Lock()


@contextmanager
def launch_on(device: torch.device, kernel_name: str) -> Iterator[int]:
    """Guards `device` and yields the handle of its current torch stream for a kernel launch."""
    require_cuda_kernels(kernel_name)
    with torch.cuda.device(device):
        yield torch.cuda.current_stream(device).cuda_stream


def scratch(n_bytes: int, device: torch.device) -> torch.Tensor:
    """A byte buffer from torch's caching allocator: freed back to torch's pool, in stream order, when dropped."""
    return torch.empty(max(int(n_bytes), 1), dtype=torch.uint8, device=device)


def device_table(key: tuple, device: torch.device, build: Callable[[], np.ndarray]) -> torch.Tensor:
    """The constant table `build()` (a host uint8 array) on `device`, built and uploaded once per (key, device).

    The upload is synchronised once, so any stream may read the table afterwards; each use records
    the current stream, so an evicted table is not reused by torch while a kernel still reads it.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    cache_key = (key, index)
    with _tables_lock:
        table = _tables.get(cache_key)
        if table is not None:
            _tables.move_to_end(cache_key)
    if table is None:
        host = np.ascontiguousarray(build(), dtype=np.uint8)
        with torch.cuda.device(index):
            table = torch.from_numpy(host).to(f"cuda:{index}")
            torch.cuda.current_stream(index).synchronize()
        with _tables_lock:
            _tables[cache_key] = table
            while len(_tables) > _TABLE_CACHE_SIZE:
                _tables.popitem(last=False)
    table.record_stream(torch.cuda.current_stream(index))
    return table


def cached_table_count() -> int:
    """How many (configuration, device) tables are resident: for tests of the cache."""
    with _tables_lock:
        return len(_tables)
