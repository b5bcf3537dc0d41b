"""Calibration of every system's decision threshold, run as a user runs asdx (`asdx.runner.run`).

With q = 0.9 about 10 % of the NORMAL test clips should be flagged. For each system
(ae, sera, fusion, proto; the BEATs ones with the random-tiny model, as `asdx demo`
configures them) on synthetic dev machines, this reads the finished run directories
and reports, per system and domain:

  - the normal-flag rate (normal test clips with score > threshold) and the anomaly-flag rate;
  - the worst machine-seed run;
  - which gamma method fitted (threshold.json `method`) and whether any MLE fit sits on
    the boundary of its likelihood (loc at the smallest threshold score, shape < 1);
  - fusion only: test clips sharing a final score while their sub-scores differ, and the
    fused AUC (source) against the better of its two sub-scores' AUC (source).

Two sizes: "small" (40 source + 6 target train clips, 20 test clips per domain x label,
3 seeds) and "dcase" (990 + 10 train, 50 test per cell, 1 seed). Clips are 2 s long
at both sizes to keep the CPU time of a 2-core host bounded; the clip count, not its
length, is what the threshold's honest scores depend on.

    python benchmarks/calibration.py [--sizes small,dcase] [--systems ae,sera,fusion,proto] [--quick] [--no-record]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish

import asdx
from asdx.data.synth import generate
from asdx.metrics import auc

MACHINES = ("fan", "gearboxEmu", "valveEmu", "bearingEmu")
SYSTEMS = ("ae", "sera", "fusion", "proto")
SIZES = {
    "small": {"seeds": (0, 1, 2), "seconds": 2.0, "n_source": 40, "n_target": 6, "n_test": 20},
    # CPU time: the AE at 30 epochs (as the issue's own check) and proto at 5 at this size
    "dcase": {"seeds": (0,), "seconds": 2.0, "n_source": 990, "n_target": 10, "n_test": 50,
              "epochs": {"ae": 30, "proto": 5}},
    "quick": {"seeds": (0,), "seconds": 1.0, "n_source": 20, "n_target": 4, "n_test": 4},
}
GOAL_MEAN, GOAL_TOLERANCE, GOAL_MAX = 0.10, 0.05, 0.30
FUSION_SUB_SCORES = ("knn_rank", "gmm_rank")  # the raw sub-scores fused by T_fusion


def system_config(system: str, quick: bool, epochs: dict | None = None):
    """The system's config as `asdx demo` runs it (random-tiny BEATs; fusion 5 epochs; proto tiny, 10 epochs)."""
    from asdx.systems.ae import AEConfig
    from asdx.systems.fusion import FusionConfig
    from asdx.systems.proto import ProtoConfig
    from asdx.systems.sera import SeraConfig

    epochs = epochs or {}
    if system == "ae":
        return AEConfig(epochs=2 if quick else epochs.get("ae", 100))
    if system == "sera":
        return SeraConfig(beats="random-tiny", epochs=1) if quick else SeraConfig(beats="random-tiny")
    if system == "fusion":
        return FusionConfig(beats="random-tiny", epochs=1 if quick else 5)
    if system == "proto":
        return ProtoConfig(beats="random-tiny", size="tiny", epochs=1 if quick else epochs.get("proto", 10))
    raise ValueError(f"system: expected one of {SYSTEMS}, got {system!r}.")


@dataclass
class MachineResult:
    """What one finished machine of one run says about its threshold."""

    normal_flag: dict  # domain ("all", "source", "target") -> fraction of normal test clips flagged
    anomaly_flag: dict
    method: str
    boundary: bool
    n_threshold_scores: int
    fusion: dict | None


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _threshold_scores(machine_dir: Path) -> np.ndarray:
    """The scores the gamma was fitted on: threshold_scores.csv when the system gave its own, else the train scores."""
    own = machine_dir / "threshold_scores.csv"
    rows = _read_csv(own if own.exists() else machine_dir / "train_scores.csv")
    return np.array([float(r["score"]) for r in rows])


def _on_boundary(threshold: dict, fitted: np.ndarray) -> bool:
    """An MLE fit whose loc sits at the smallest fitted score with shape < 1: the likelihood's spike."""
    if threshold.get("method", "mle") != "mle" or threshold.get("shape") is None or fitted.size == 0:
        return False
    spread = float(fitted.max() - fitted.min()) or 1.0
    gap = float(fitted.min()) - float(threshold["loc_fitted"])
    return threshold["shape"] < 1.0 and gap <= 1e-6 * spread


def _fusion_checks(rows: list[dict], scores: np.ndarray, labels: np.ndarray, domains: np.ndarray) -> dict:
    """Ties of the final score not explained by tied sub-scores; fused vs sub-score AUC (source)."""
    subs = np.array([[float(r[k]) for k in FUSION_SUB_SCORES] for r in rows]) if rows and all(
        k in rows[0] for k in FUSION_SUB_SCORES) else None
    unexplained = 0
    order = np.argsort(scores, kind="stable")
    for a, b in zip(order[:-1], order[1:]):
        if scores[a] == scores[b] and (subs is None or not np.array_equal(subs[a], subs[b])):
            unexplained += 1
    source = domains == "source"
    fused_auc = auc(labels[source], scores[source])
    sub_aucs = [auc(labels[source], subs[source, j]) for j in range(subs.shape[1])] if subs is not None else []
    return {"unexplained_ties": unexplained, "fused_auc_source": fused_auc,
            "best_sub_auc_source": max(sub_aucs) if sub_aucs else float("nan")}


def read_machine(machine_dir: Path, system: str) -> MachineResult:
    threshold = json.loads((machine_dir / "threshold.json").read_text())
    rows = _read_csv(machine_dir / "test_scores.csv")
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    domains = np.array([r["domain"] for r in rows])
    flagged = scores > float(threshold["threshold"])
    normal_flag, anomaly_flag = {}, {}
    for domain in ("all", "source", "target"):
        in_domain = np.ones(len(rows), bool) if domain == "all" else domains == domain
        normal_flag[domain] = float(flagged[in_domain & (labels == 0)].mean())
        anomaly_flag[domain] = float(flagged[in_domain & (labels == 1)].mean())
    fitted = _threshold_scores(machine_dir)
    return MachineResult(normal_flag, anomaly_flag, str(threshold.get("method", "mle (no method recorded)")),
                         _on_boundary(threshold, fitted), int(threshold.get("n_train", fitted.size)),
                         _fusion_checks(rows, scores, labels, domains) if system == "fusion" else None)


def run_system(system: str, data: Path, out: Path, seed: int, quick: bool, log, epochs=None) -> Path:
    from asdx.options import RunOptions
    from asdx.runner import run

    options = RunOptions(system=system, machines=",".join(MACHINES), data=data, out=out, name=f"seed{seed}",
                         resume=True, progress=False, notes=("benchmarks/calibration.py",))
    start = time.perf_counter()
    run_dir, _ = run(options, system_config(system, quick, epochs))
    log(f"  {system} seed {seed}: {time.perf_counter() - start:.0f} s")
    return run_dir


def study(work: Path, size: str, systems, log=print) -> dict:
    """{system: [(machine, seed, MachineResult), ...]}; finished runs are resumed (nothing retrained)."""
    sizes = SIZES[size]
    results = {system: [] for system in systems}
    for seed in sizes["seeds"]:
        data = generate(work / size / f"data-seed{seed}", machines=",".join(MACHINES), seconds=sizes["seconds"],
                        n_source=sizes["n_source"], n_target=sizes["n_target"], n_test=sizes["n_test"], seed=seed,
                        progress=False)
        for system in systems:
            run_dir = run_system(system, data, work / size / "runs", seed, size == "quick", log, sizes.get("epochs"))
            for machine in MACHINES:
                results[system].append((machine, seed, read_machine(run_dir / "machines" / machine, system)))
    return results


def summarize(results: dict) -> dict:
    summary = {}
    for system, rows in results.items():
        flags = np.array([r.normal_flag["all"] for _, _, r in rows])
        mean = lambda key, domain: float(np.mean([getattr(r, key)[domain] for _, _, r in rows]))  # noqa: E731
        worst = max(rows, key=lambda row: row[2].normal_flag["all"])
        methods: dict[str, int] = {}
        for _, _, r in rows:
            methods[r.method] = methods.get(r.method, 0) + 1
        entry = {"normal_flag": mean("normal_flag", "all"), "normal_flag_source": mean("normal_flag", "source"),
                 "normal_flag_target": mean("normal_flag", "target"), "anomaly_flag": mean("anomaly_flag", "all"),
                 "worst": f"{worst[0]} seed {worst[1]}: {worst[2].normal_flag['all']:.2f}",
                 "max": float(flags.max()), "methods": methods,
                 "boundary_fits": int(sum(r.boundary for _, _, r in rows)),
                 "n_threshold_scores": sorted({r.n_threshold_scores for _, _, r in rows}),
                 "runs": len(rows)}
        entry["meets"] = bool(abs(entry["normal_flag"] - GOAL_MEAN) <= GOAL_TOLERANCE + 1e-12
                              and entry["max"] <= GOAL_MAX)
        fusion = [r.fusion for _, _, r in rows if r.fusion is not None]
        if fusion:
            entry["unexplained_ties"] = int(sum(f["unexplained_ties"] for f in fusion))
            entry["fused_below_best_sub"] = int(sum(f["fused_auc_source"] < f["best_sub_auc_source"] for f in fusion))
            entry["fused_auc_source"] = float(np.mean([f["fused_auc_source"] for f in fusion]))
            entry["best_sub_auc_source"] = float(np.mean([f["best_sub_auc_source"] for f in fusion]))
        summary[system] = entry
    return summary


def table(summary: dict) -> list[str]:
    lines = ["| system | normal-flag | source | target | worst run | anomaly-flag | threshold scores per machine | "
             "gamma method (machines) | boundary fits | goal |",
             "|---|---:|---:|---:|---|---:|---|---|---:|---|"]
    for system, s in summary.items():
        methods = ", ".join(f"{m} {n}" for m, n in sorted(s["methods"].items()))
        counts = ", ".join(str(n) for n in s["n_threshold_scores"])
        lines.append(f"| {system} | {s['normal_flag']:.3f} | {s['normal_flag_source']:.3f} | "
                     f"{s['normal_flag_target']:.3f} | {s['worst']} | {s['anomaly_flag']:.3f} | {counts} | "
                     f"{methods} | {s['boundary_fits']} of {s['runs']} | {'met' if s['meets'] else 'NOT met'} |")
    fusion = summary.get("fusion")
    if fusion and "unexplained_ties" in fusion:
        lines += ["", f"fusion: {fusion['unexplained_ties']} test-score ties not explained by tied sub-scores; "
                      f"fused AUC (source) below the better sub-score's in {fusion['fused_below_best_sub']} of "
                      f"{fusion['runs']} machine runs (mean fused {fusion['fused_auc_source']:.3f}, mean best sub-score "
                      f"{fusion['best_sub_auc_source']:.3f})."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,dcase", help="comma-separated: small, dcase (quick: a smoke run)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--quick", action="store_true", help="the 'quick' size only, few epochs, not recorded")
    parser.add_argument("--work", default=None, help="data and runs (default: ~/.cache/asdx/calibration)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    asdx.set_num_threads(args.threads)
    systems = [s for s in args.systems.split(",") if s]
    sizes = ["quick"] if args.quick else [s for s in args.sizes.split(",") if s]
    work = Path(args.work) if args.work else Path.home() / ".cache" / "asdx" / "calibration"
    section = [f"## calibration — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), ""]
    for size in sizes:
        start = time.perf_counter()
        summary = summarize(study(work, size, systems))
        s = SIZES[size]
        section += [f"### {size}: {s['n_source']} source + {s['n_target']} target train clips of {s['seconds']:g} s, "
                    f"{s['n_test']} test clips per domain × label, machines {', '.join(MACHINES)}, seeds "
                    f"{', '.join(map(str, s['seeds']))}"
                    + "".join(f", {k} {v} epochs" for k, v in s.get("epochs", {}).items())
                    + f"; wall time {(time.perf_counter() - start) / 60:.1f} min "
                    "(finished runs reused count 0)", "", *table(summary), ""]
        print("\n".join(table(summary)), flush=True)
    section += ["normal-flag / anomaly-flag: fraction of normal / anomalous test clips with score > threshold (mean "
                "over machine runs; source / target: that domain's normal clips). worst run: the highest normal-flag "
                "rate of one machine and seed. boundary fits: MLE fits with shape < 1 and loc at the smallest "
                "fitted score (the unbounded likelihood's spike).",
                f"Goal: normal-flag mean {GOAL_MEAN:.2f} ± {GOAL_TOLERANCE:.2f} per system, no machine run above "
                f"{GOAL_MAX:.2f}."]
    publish(section, record_it=not (args.no_record or args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
