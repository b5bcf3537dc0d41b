"""What this asdx installation is: versions, the build, the hardware it sees."""

from __future__ import annotations

import importlib.metadata as metadata
import platform


def _faiss_status() -> dict:
    """faiss version and flavour; flags the broken state of faiss-cpu and faiss-gpu side by side."""
    installed = []
    for dist in ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11"):
        try:
            installed.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    status = {"faiss": None, "faiss_distributions": installed, "faiss_gpus": 0, "faiss_conflict": False}
    status["faiss_conflict"] = any(d.startswith("faiss-cpu") for d in installed) and any(
        d.startswith("faiss-gpu") for d in installed
    )
    try:
        import faiss
    except ImportError:
        return status
    status["faiss"] = getattr(faiss, "__version__", "unknown")
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    status["faiss_gpus"] = int(get_num_gpus()) if get_num_gpus else 0
    return status


def info() -> dict:
    """Versions of asdx, torch, numpy and faiss; the compiled kernels; visible GPUs; CPU threads."""
    import numpy
    import torch

    import asdx
    from asdx._native import _C, get_num_threads

    build = dict(_C.build_info())
    report = {
        "asdx": asdx.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **_faiss_status(),
        "cuda_kernels_compiled": build["cuda_compiled"],
        "cuda_architectures": build["cuda_architectures"],
        "cuda_build_version": build["cuda_runtime_version"],
        "compiler": build["compiler"],
        "gpu_visible_to_asdx": _C.cuda_device_count(),
        "gpu_visible_to_torch": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_threads": get_num_threads(),
        "cpu_cores_available": _C.available_cores(),
    }
    return report


def format_info(report: dict) -> str:
    lines = [f"{key:24s} {value}" for key, value in report.items()]
    if report.get("faiss_conflict"):
        lines.append(
            "WARNING: faiss-cpu and faiss-gpu are both installed; they provide the same module. "
            "Uninstall both, then install exactly one (pip install 'asdx[cpu]' or 'asdx[gpu]')."
        )
    return "\n".join(lines)
