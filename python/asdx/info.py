"""What this asdx installation is: versions, the build, the hardware it sees, and broken pairings."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import re

FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu-cu12-cuvs")
_CUDA_TAG = re.compile(r"-cu(\d+)\b")   # nvidia-cuda-runtime-cu12, faiss-gpu-cu11


def _installed_faiss() -> dict[str, tuple[str, list[str]]]:
    """{distribution: (version, its requirements)} of the FAISS distributions installed."""
    found = {}
    for dist in FAISS_DISTRIBUTIONS:
        try:
            found[dist] = (metadata.version(dist), list(metadata.requires(dist) or []))
        except metadata.PackageNotFoundError:
            pass
    return found


def faiss_cuda_major(name: str, requires: list[str]) -> int | None:
    """The CUDA major a faiss-gpu distribution is built for: from its name (-cu12) or from the NVIDIA runtime
    wheels it requires (nvidia-cuda-runtime-cu12); None when neither says."""
    for text in (name, *requires):
        match = _CUDA_TAG.search(text)
        if match:
            return int(match.group(1))
    return None


def faiss_problems(installed: dict[str, tuple[str, list[str]]], torch_cuda: str | None) -> list[str]:
    """The two broken FAISS setups, in words.

    - faiss-cpu beside a faiss-gpu: both install the module `faiss`, one overwrites the other's files;
    - a faiss-gpu built for another CUDA major than torch: pip then holds two CUDA runtimes (several GB) and
      the two libraries load different CUDA libraries into one process.
    """
    problems = []
    gpus = [name for name in installed if name.startswith("faiss-gpu")]
    if "faiss-cpu" in installed and gpus:
        problems.append(f"faiss-cpu and {gpus[0]} are both installed; they provide the same module `faiss`. "
                        "Uninstall both, then install exactly one (pip install '.[cpu]' or '.[gpu]').")
    torch_major = int(torch_cuda.split(".")[0]) if torch_cuda else None
    for name in gpus:
        major = faiss_cuda_major(name, installed[name][1])
        if major is not None and torch_major is not None and major != torch_major:
            problems.append(f"{name} is built for CUDA {major} but torch for CUDA {torch_cuda}: two CUDA stacks are "
                            f"installed side by side. Pair it with a CUDA {major} build of torch, or use faiss-cpu "
                            "(pip install '.[cpu]'); see the README, Installing.")
    return problems


def _faiss_status(torch_cuda: str | None) -> dict:
    """faiss version and flavour; the distributions installed and the problems of their pairing."""
    installed = _installed_faiss()
    names = [f"{name}=={version}" for name, (version, _) in installed.items()]
    gpus = [name for name in installed if name.startswith("faiss-gpu")]
    status = {"faiss": None, "faiss_distributions": names, "faiss_gpus": 0,
              "faiss_conflict": "faiss-cpu" in installed and bool(gpus),
              "faiss_gpu_cuda": next((faiss_cuda_major(n, installed[n][1]) for n in gpus), None),
              "faiss_problems": faiss_problems(installed, torch_cuda)}
    try:
        import faiss
    except ImportError:
        return status
    status["faiss"] = getattr(faiss, "__version__", "unknown")
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    status["faiss_gpus"] = int(get_num_gpus()) if get_num_gpus else 0
    return status


def info() -> dict:
    """Versions of asdx, torch, numpy and faiss; the compiled kernels; visible GPUs; the CPU kernels' ISA path
    and the paths this CPU supports; CPU threads; wait policy."""
    import numpy
    import torch

    import asdx
    from asdx._native import _C, get_num_threads
    from asdx._threads import wait_policy
    from asdx.kernels import build_facts, cpu_isa, cpu_isa_supported, device_report, get_kernels, version_text

    build = dict(_C.build_info())
    facts = build_facts()
    try:
        kernels = get_kernels()
    except ValueError as error:  # shown, not raised: `asdx info` is where a user looks for what is wrong
        kernels = f"invalid ({error})"
    try:
        isa = cpu_isa()
    except ValueError as error:  # shown, not raised, as for ASDX_KERNELS
        isa = f"invalid ({error})"
    report = {
        "asdx": asdx.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        **_faiss_status(torch.version.cuda),
        "cuda_kernels_compiled": build["cuda_compiled"],
        "cuda_architectures": build["cuda_architectures"],
        "cuda_build_version": build.get("cuda_runtime_version", ""),
        "kernels": kernels,
        "cuda_toolkit": version_text(facts.toolkit_version) if facts.cuda_compiled else "none (no CUDA kernels)",
        "cuda_driver": version_text(facts.driver_version),
        "compiler": build["compiler"],
        "gpu_visible_to_asdx": _C.cuda_device_count(),
        "gpu_visible_to_torch": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_isa": isa,  # the path of the native CPU kernels (ASDX_ISA, else the best supported)
        "cpu_isa_supported": ", ".join(cpu_isa_supported()),
        "cpu_threads": get_num_threads(),
        "cpu_cores_available": _C.available_cores(),
        "omp_wait_policy": wait_policy(),
        # per visible CUDA device: can the native kernels run there, and if not, why (asdx.kernels)
        "cuda_devices": device_report(),
    }
    return report


def format_info(report: dict) -> str:
    lines = [f"{key:24s} {value}" for key, value in report.items() if key not in ("faiss_problems", "cuda_devices")]
    for device in report.get("cuda_devices", []):
        verdict = "native kernels run" if device["native_kernels"] else f"torch kernels: {device['why_not']}"
        lines.append(f"{device['device']:24s} {device['name']} (compute capability {device['capability']}): {verdict}")
    lines += [f"WARNING: {problem}" for problem in report.get("faiss_problems", [])]
    return "\n".join(lines)
