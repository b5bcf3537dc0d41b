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
    """Threads used by the CPU kernels (default: the cores this process may use)."""
    _C.set_num_threads(int(threads))


def get_num_threads() -> int:
    return int(_C.num_threads())
