"""asdx: unsupervised anomalous sound detection (DCASE Task 2) on C++/CUDA kernels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asdx")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

from asdx._native import get_num_threads, set_num_threads
from asdx.info import info

__all__ = ["__version__", "get_num_threads", "info", "set_num_threads"]
