"""Helpers shared by the benchmark scripts: timing, the machine description, RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import asdx
from asdx._atomic import atomic_write_text

try:
    import torchaudio
except ImportError:  # optional
    torchaudio = None

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Each section is appended by a benchmark script; ratios are measured in the same run on the machine named.\n"
)


def timeit_best(fn: Callable[[], object], repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    """Best wall-clock time of fn() in milliseconds over `repeat` runs, after one warm-up run."""
    fn()
    sync()
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best * 1e3



def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _blas_threads() -> str:
    """numpy's BLAS threads are not set by this script; say what they are, if threadpoolctl can tell."""
    try:
        from threadpoolctl import threadpool_info
        pools = [f"{p['internal_api']} {p['num_threads']} threads" for p in threadpool_info() if p["user_api"] == "blas"]
    except Exception:  # threadpoolctl is optional
        pools = []
    return (", ".join(pools) or "library default") + " (not set by this script)"


def machine_lines(threads: int, gpu_name: str | None) -> list[str]:
    uname = platform.uname()
    cpu = " ".join(filter(None, [_cpu_model(), platform.processor() or None])) or "unknown CPU"
    versions = f"asdx {asdx.__version__}, torch {torch.__version__}, numpy {np.__version__}, " + (
        f"torchaudio {torchaudio.__version__}" if torchaudio is not None else "torchaudio not installed")
    return [
        f"- machine: {cpu}, {uname.machine}, {uname.system} {uname.release}; os.cpu_count() = {os.cpu_count()}, "
        f"usable cores {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 'unknown'}",
        f"- threads: asdx {asdx.get_num_threads()}, torch {torch.get_num_threads()} (--threads {threads}); "
        f"numpy BLAS: {_blas_threads()}",
        f"- versions: {versions}",
        f"- load average at the end (1/5/15 min): {' / '.join(f'{v:.2f}' for v in os.getloadavg())} "
        "(above the thread count means other work shared the CPU)",
        f"- GPU: {gpu_name}" if gpu_name else "- GPU: none used",
    ]


def record(section: list[str]) -> None:
    """Appends the section to RESULTS.md, atomically."""
    old = RESULTS.read_text() if RESULTS.exists() else RESULTS_HEADER
    atomic_write_text(RESULTS, old.rstrip("\n") + "\n\n" + "\n".join(section).rstrip("\n") + "\n")


def publish(section: list[str], record_it: bool) -> None:
    """Prints the section and, unless asked not to, appends it to RESULTS.md."""
    print("\n".join(section))
    if record_it:
        record(section)
        print(f"\nappended to {RESULTS}")
    else:
        print("\n(not recorded: --no-record or --quick)")
