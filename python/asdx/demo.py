"""`asdx demo`: the main job on a built-in default, end to end in a few minutes on 2 CPU cores.

Synthesises a small stereo dataset (two dev and two eval machine types), runs
the official AE baseline (MAHALA, the official 100 epochs) on each, thresholds,
writes the submission, evaluates with the official metric and writes the report.
Re-running resumes: finished machines and the generated data are reused.
"""

from __future__ import annotations

import os
from pathlib import Path

from asdx.data.synth import generate
from asdx.evaluation import format_report
from asdx.runner import RunOptions, run
from asdx.systems.ae import AEConfig

DEMO_MACHINES = ("fan", "valveEmu", "ToyDrone", "Sander")
DEMO_SIZES = {"seconds": 4.0, "n_source": 60, "n_target": 6, "n_test": 20}


def default_demo_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "asdx" / "demo"


def demo(out=None, progress: bool = True):
    """Runs the demo under `out` (default: the user's cache folder); returns (run_dir, evaluation)."""
    base = Path(out) if out is not None else default_demo_dir()
    data = generate(base / "data", machines=",".join(DEMO_MACHINES), seed=0, progress=progress, **DEMO_SIZES)
    options = RunOptions(system="ae", machines=",".join(DEMO_MACHINES), data=data, out=base / "runs", name="demo",
                         resume=True, progress=progress,
                         notes=("asdx demo: synthetic data (not DCASE recordings), official AE baseline, MAHALA",))
    run_dir, evaluation = run(options, AEConfig())
    print(format_report(evaluation))
    print(f"\nreport: {run_dir / 'report.html'}")
    return run_dir, evaluation
