"""asdx: unsupervised anomalous sound detection (DCASE Task 2) on C++/CUDA kernels."""

# First, before anything can import torch: OpenMP threads that sleep while they wait (asdx._threads).
from asdx import _threads  # noqa: F401  isort: skip

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asdx")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

from asdx._native import get_num_threads, set_num_threads
from asdx.info import info
from asdx.kernels import get_kernels, set_kernels

# Subpackages load on first use (`asdx.scoring.KNNScorer` works after a bare `import asdx`), so importing
# asdx stays cheap for a DataLoader worker or a CLI call that needs one kernel.
SUBMODULES = ("compare", "config", "data", "detector", "device", "distributed", "evaluation", "features", "index",
              "kernels", "metrics", "models", "options", "reference", "report", "rundir", "runner", "scoring", "seeds",
              "splits", "submission", "systems", "torch_kernels", "watch")


def load_detector(run_dir, machine: str, **options):
    """A finished run's machine as a detector (asdx.detector.load_detector): score new clips, no retraining."""
    from asdx.detector import load_detector as load

    return load(run_dir, machine, **options)


def __getattr__(name: str):
    if name in SUBMODULES:
        import importlib

        module = importlib.import_module(f"asdx.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'asdx' has no attribute {name!r}")


# The public names: the functions above, the version and the subpackages (loaded lazily by __getattr__).
__all__ = ["__version__", "get_kernels", "get_num_threads", "info", "load_detector", "set_kernels",
           "set_num_threads", *SUBMODULES]


def __dir__():
    """The public names only (not the helpers this module imports, e.g. importlib's `version`)."""
    return sorted(__all__)
