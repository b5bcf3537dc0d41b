"""`asdx demo`: the main job on a built-in default, end to end in a few minutes on 2 CPU cores.

Synthesises a small stereo dataset (two dev and two eval machine types), runs
the official AE baseline (MAHALA, the official 100 epochs), sera_ft1, T_fusion
(5 epochs) and P_proto (tiny network, 10 epochs) with the small random
`random-tiny` BEATs (real BEATs weights are not shipped) on each,
thresholds, writes the submissions, evaluates with the official metric and
writes the reports. Re-running resumes: finished machines, the global stage and
the generated data are reused.
"""

from __future__ import annotations

import os
from pathlib import Path

from asdx.data.synth import generate
from asdx.evaluation import format_report
from asdx.options import RunOptions
from asdx.rundir import RunDir
from asdx.runner import run
from asdx.systems.configs import AEConfig, FusionConfig, ProtoConfig, SeraConfig

DEMO_MACHINES = ("fan", "valveEmu", "ToyDrone", "Sander")
DEMO_SIZES = {"seconds": 4.0, "n_source": 60, "n_target": 6, "n_test": 20}


def default_demo_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "asdx" / "demo"


def demo(out=None, progress: bool = True, systems: tuple[str, ...] = ("ae", "sera", "fusion", "proto")):
    """Runs the demo under `out` (default: the user's cache folder); returns {system: (run_dir, evaluation)}."""
    base = Path(out) if out is not None else default_demo_dir()
    data = generate(base / "data", machines=",".join(DEMO_MACHINES), seed=0, progress=progress, preview=True,
                    **DEMO_SIZES)
    configs = {"ae": (AEConfig(), "official AE baseline, MAHALA"),
               "sera": (SeraConfig(beats="random-tiny"), "sera_ft1 with the random-tiny BEATs"),
               "fusion": (FusionConfig(beats="random-tiny", epochs=5), "T_fusion with the random-tiny BEATs, "
                                                                       "5 epochs"),
               "proto": (ProtoConfig(beats="random-tiny", size="tiny", epochs=10),
                         "P_proto, tiny network, random-tiny BEATs, 10 epochs")}
    results = {}
    for system in systems:
        config, what = configs[system]
        options = RunOptions(system=system, machines=",".join(DEMO_MACHINES), data=data, out=base / "runs",
                             name="demo", resume=True, progress=progress,
                             notes=(f"asdx demo: synthetic data (not DCASE recordings), {what}",))
        run_dir, evaluation = run(options, config)
        print(f"\n== {system} ==")
        print(format_report(evaluation))
        print(f"report: {RunDir(run_dir).report_html}")
        results[system] = (run_dir, evaluation)
    print("\n== all systems (synthetic data, random-tiny BEATs: not the report's numbers; they also move a little "
          "with the CPU and the thread count) ==")
    for system, (_, evaluation) in results.items():
        print(f"{system:8s} official score Ω = {evaluation.summary.official_score:.4f}")
    print(f"\ndemo data and runs are under {base}")
    return results
