"""Which implementation runs asdx's kernels: the native C++/CUDA ones, or their torch twins.

Every kernel family (frontends, stereo_view, mahalanobis, gmm, gamma) has a native implementation
(asdx._C, CPU and CUDA) and a torch one (asdx.torch_kernels) that gives the same results
within the tolerances of docs/kernels.md and runs on any torch device. The choice:

- ``"auto"`` (the default): native where it can run on the input's device, torch elsewhere.
  On the CPU that is always native. On a CUDA device the native kernels are skipped, and the
  reason said once (a logging warning on ``asdx.kernels`` and a run note, `fallback_notes`), when
  asdx was built without CUDA kernels, when the driver is older than the CUDA toolkit the
  extension was built with, when no compiled architecture runs on the device's compute
  capability, or when a family's first native launch on a device raises (that family then
  uses torch on that device for the rest of the process).
- ``"native"``: always native; errors propagate (a CUDA input without CUDA kernels raises).
- ``"torch"``: always torch, on every device, the CPU included.

Set it with the environment variable ASDX_KERNELS or with `set_kernels` (which wins).
Why: a CUDA build that has never run on the user's GPU (another architecture, an older
driver) must not stand between the user and a working run.

On the CPU the native kernels also choose an instruction-set path at every call (`cpu_isa`):
the environment variable ASDX_ISA (auto, avx512, avx2 or baseline; unset = auto = the best this
CPU supports). docs/kernels.md says more.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

from asdx._native import _C

__all__ = ["CHOICES", "ISA_CHOICES", "BuildFacts", "build_facts", "cpu_isa", "cpu_isa_supported", "dispatch",
           "fallback_notes", "get_kernels", "native_cuda_problem", "runs_on_capability", "set_kernels"]

CHOICES = ("native", "torch", "auto")
ENVIRONMENT = "ASDX_KERNELS"
ISA_CHOICES = ("auto", "avx512", "avx2", "baseline")
ISA_ENVIRONMENT = "ASDX_ISA"
FAMILIES = ("frontend", "stereo_view", "mahalanobis", "gmm", "gamma")

log = logging.getLogger("asdx.kernels")
Result = TypeVar("Result")

_lock = threading.Lock()
_choice: str | None = None                      # set_kernels' choice; None: the environment decides
_notes: list[str] = []                          # the fallbacks said so far, in order (each once)
_broken: dict[tuple[str, str], str] = {}        # (family, device) -> why its native kernel is not used
_proven: set[tuple[str, str]] = set()           # (family, device) whose native kernel has run once


def _check_choice(choice, where: str) -> str:
    if choice not in CHOICES:
        raise ValueError(f"{where}: must be one of {', '.join(map(repr, CHOICES))}, got {choice!r}.")
    return choice


def set_kernels(choice: str | None) -> None:
    """Selects the kernels for this process: "native", "torch" or "auto"; None returns the choice to
    the environment variable ASDX_KERNELS (default "auto")."""
    global _choice
    _choice = None if choice is None else _check_choice(choice, "set_kernels")


def get_kernels() -> str:
    """The kernel choice in force: set_kernels' if given, else ASDX_KERNELS (ValueError naming it when it
    holds anything but native, torch or auto), else "auto"."""
    if _choice is not None:
        return _choice
    value = os.environ.get(ENVIRONMENT, "").strip()
    if not value:
        return "auto"
    return _check_choice(value.lower(), f"{ENVIRONMENT} (environment variable)")


# ---------------------------------------------------------------------- the CPU kernels' ISA path


def cpu_isa() -> str:
    """The instruction-set path the native CPU kernels (Mahalanobis, GMM) run now: "avx512" (x86-64-v4),
    "avx2" (x86-64-v3) or "baseline" (x86-64). ASDX_ISA picks it, read at every kernel call; unset, empty
    or "auto" = the best this CPU (and its OS) supports. ValueError naming ASDX_ISA for a value other
    than auto, avx512, avx2 or baseline, or for a path this CPU lacks (the kernels raise the same)."""
    return str(_C.cpu_isa())


def cpu_isa_supported() -> list[str]:
    """The paths this CPU can run, best first (["avx512", "avx2", "baseline"] on an x86-64-v4 CPU); only
    ["baseline"] where asdx was not built by GCC for x86-64."""
    return [str(name) for name in _C.cpu_isa_supported()]


# ---------------------------------------------------------------------- what the build can run


@dataclass(frozen=True)
class BuildFacts:
    """The native extension's CUDA facts. Versions are CUDA's integers (13000 = 13.0); 0 = none or unknown.
    architectures: CMake's list as built, e.g. "75-real;80-real;90-real;90-virtual"."""

    cuda_compiled: bool
    toolkit_version: int
    architectures: str
    driver_version: int


def _version_int(value) -> int:
    """13000 from 13000, "13.0" or "13.0.88"; 0 when unknown."""
    if isinstance(value, int):
        return max(value, 0)
    match = re.match(r"^\s*(\d+)\.(\d+)", str(value or ""))
    return int(match.group(1)) * 1000 + int(match.group(2)) * 10 if match else 0


def version_text(version: int) -> str:
    """"13.0" from 13000; "unknown" for 0."""
    return f"{version // 1000}.{(version % 1000) // 10}" if version > 0 else "unknown"


def build_facts() -> BuildFacts:
    """The facts of this build of asdx._C (older builds lack some keys: they read as unknown)."""
    info = dict(_C.build_info())
    toolkit = _version_int(info.get("cuda_toolkit_version", info.get("cuda_runtime_version", 0)))
    driver_call = getattr(_C, "cuda_driver_version", None)
    driver = 0
    if driver_call is not None:
        try:
            driver = _version_int(int(driver_call()))
        except Exception:  # noqa: BLE001 - no driver at all reads as unknown
            driver = 0
    return BuildFacts(bool(info.get("cuda_compiled", False)), toolkit, str(info.get("cuda_architectures", "") or ""),
                      driver)


_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)([af]?)(?:-(real|virtual))?$")


def runs_on_capability(capability: tuple[int, int], architectures: str) -> bool | None:
    """Whether a build for `architectures` (CMake's list) has code for a device of `capability` (major, minor).

    An entry XY or XY-real is machine code (cubin), which runs on capability X.Y and on X.Z for Z > Y (same
    major); XY or XY-virtual is PTX, which the driver compiles for any capability >= X.Y (CUDA C++
    Programming Guide, "Binary Compatibility" and "PTX Compatibility"). Entries with the suffix a
    (architecture-specific features, 90a) run on exactly that capability. None when the list cannot be read
    (empty, or "native"/"all"): unknown.
    """
    entries = [e.strip() for e in architectures.replace(",", ";").split(";") if e.strip()]
    if not entries:
        return None
    device = capability[0] * 10 + capability[1]
    unknown = False
    for entry in entries:
        match = _ARCH.match(entry)
        if match is None:
            unknown = True
            continue
        arch, suffix, kind = int(match.group(1)), match.group(2), match.group(3)
        if kind in (None, "real") and (arch == device if suffix == "a" else
                                       arch // 10 == device // 10 and arch <= device):
            return True
        if kind in (None, "virtual") and (arch == device if suffix == "a" else arch <= device):
            return True
    return None if unknown else False


def device_capability(device) -> tuple[int, int]:
    """(major, minor) of a CUDA device (a seam for the tests, which have no GPU)."""
    import torch

    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def native_cuda_problem(device) -> str | None:
    """Why the native CUDA kernels cannot run on `device` (a torch CUDA device), or None when they can
    (as far as the build, the driver and the architectures tell; a launch may still fail)."""
    facts = build_facts()
    if not facts.cuda_compiled:
        return "asdx was built without CUDA kernels (no nvcc at build time)"
    if facts.driver_version and facts.toolkit_version and facts.driver_version < facts.toolkit_version:
        return (f"the NVIDIA driver supports CUDA {version_text(facts.driver_version)}, older than the CUDA "
                f"{version_text(facts.toolkit_version)} toolkit asdx was built with")
    major, minor = device_capability(device)
    if runs_on_capability((major, minor), facts.architectures) is False:
        return (f"no kernel for compute capability {major}.{minor} (built for {facts.architectures}; rebuild "
                "on this machine with `pip install .`)")
    return None


# ---------------------------------------------------------------------- the dispatch


def _device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _say(note: str) -> None:
    """Logs a fallback and keeps it for the run notes; called once per (family or device, reason), as the
    unusable kernel is remembered in _broken."""
    with _lock:
        _notes.append(note)
    log.warning("%s", note)


def fallback_notes() -> list[str]:
    """The fallbacks to torch said so far in this process (each once), for the run notes."""
    with _lock:
        return list(_notes)


def reset_state() -> None:
    """Forgets fallbacks, broken and proven kernels (for tests); keeps set_kernels' choice."""
    with _lock:
        _notes.clear()
        _broken.clear()
        _proven.clear()


def _is_launch_error(error: BaseException) -> bool:
    """A native CUDA call's failure that torch could do better: a RuntimeError (CUDA errors reach Python as
    one), not an out-of-memory error (torch would fail the same way) nor a bad argument (ValueError)."""
    import torch

    return isinstance(error, RuntimeError) and not isinstance(error, torch.cuda.OutOfMemoryError)


def dispatch(family: str, device, native_cpu: Callable[[], Result], native_cuda: Callable[[], Result],
             torch_impl: Callable[[], Result]) -> Result:
    """Runs one kernel call of `family` for input on `device` (None or a CPU device: host data) with the
    implementation the choice (module docstring) gives; each callable makes the whole call and returns the
    public result (the same kind, dtype and device whichever runs)."""
    if family not in FAMILIES:
        raise ValueError(f"family: must be one of {', '.join(FAMILIES)}, got {family!r}.")
    choice = get_kernels()
    if choice == "torch":
        return torch_impl()
    on_cuda = device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda"
    if not on_cuda:
        return native_cpu()
    if choice == "native":
        return native_cuda()
    name = _device_name(device)
    key = (family, name)
    with _lock:
        broken = _broken.get(key)
        proven = key in _proven
    if broken is not None:
        return torch_impl()
    if not proven:
        problem = native_cuda_problem(device)
        if problem is not None:
            with _lock:
                for other in FAMILIES:
                    _broken[(other, name)] = problem
            _say(f"kernels: the native CUDA kernels cannot run on {name}: {problem}; using the torch "
                      f"implementations there ({ENVIRONMENT}=auto)")
            return torch_impl()
        try:
            result = native_cuda()
        except Exception as error:  # noqa: BLE001 - sorted by _is_launch_error
            if not _is_launch_error(error):
                raise
            with _lock:
                _broken[key] = f"launch error: {error}"
            _say(f"kernels: the native {family} CUDA kernel failed on its first use on {name} "
                      f"({type(error).__name__}: {error}); using its torch implementation there ({ENVIRONMENT}=auto)")
            return torch_impl()
        with _lock:
            _proven.add(key)
        return result
    return native_cuda()


def device_report() -> list[dict]:
    """Per visible CUDA device: name, capability and whether the native kernels can run there (and why not)."""
    import torch

    if not torch.cuda.is_available():
        return []
    report = []
    for index in range(torch.cuda.device_count()):
        device = torch.device(f"cuda:{index}")
        problem = native_cuda_problem(device)
        major, minor = device_capability(device)
        report.append({"device": str(device), "name": torch.cuda.get_device_name(index),
                       "capability": f"{major}.{minor}", "native_kernels": problem is None, "why_not": problem})
    return report
