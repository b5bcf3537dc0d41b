"""Access to the compiled module asdx._C, with errors that say how to fix a missing build."""

from __future__ import annotations

try:
    from asdx import _C
except ImportError as error:  # pragma: no cover - only in a source tree without a build
    raise ImportError(
        "asdx's compiled module asdx._C is missing. Install the package with `pip install .` "
        "(which builds it) instead of importing python/asdx from the source tree."
    ) from error


def cuda_kernels_compiled() -> bool:
    return bool(_C.build_info()["cuda_compiled"])


def require_cuda_kernels(what: str) -> None:
    if not cuda_kernels_compiled():
        raise RuntimeError(
            f"{what}: the input is on a CUDA device but asdx was built without CUDA kernels. "
            "Move the input to the CPU, or rebuild with nvcc on PATH (ASDX_CUDA=ON pip install .)."
        )


def set_num_threads(threads: int) -> None:
    """Threads of asdx's CPU kernels and of torch's intra-op pool: one knob, so neither oversubscribes the other."""
    import torch

    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads: must be an integer >= 1, got {threads!r}.")
    torch.set_num_threads(int(threads))
    _C.set_num_threads(int(threads))


def get_num_threads() -> int:
    follow_torch_threads()
    return int(_C.num_threads())


def follow_torch_threads() -> None:
    """The CPU kernels use torch's thread count, read before every kernel call.

    A training loop that calls torch.set_num_threads (or a DataLoader worker, which asdx pins to 1)
    thereby sets the kernels too; asdx.set_num_threads sets both at once.
    """
    import torch

    threads = max(1, torch.get_num_threads())
    if threads != _C.num_threads():
        _C.set_num_threads(threads)
