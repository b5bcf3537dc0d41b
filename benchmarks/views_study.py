"""Views study (issue "noise-aware stereo views" §4): near / far / mid / w1 for ae, sera, fusion and proto.

The synthetic set is a noisy hall (asdx.data.scene): point-like interferers coherent between the
microphones and louder at the far one, plus a diffuse floor, so the w1 residual (near minus what far
predicts linearly per frequency bin, asdx.features.stereo_view) has something to remove. For every seed
(data seed = model seed) this study synthesises a set and runs `asdx run <system> --view <view>` on
its machines (the runner's protocol: global stage, per-machine stage, official Ω) for every system and
view, then reads Ω and each machine's test scores back: AUC per anomaly kind = the kind's anomalous
test clips (both domains) against all normal test clips of the same machine (both domains), averaged
over the machines.

Systems: ae (the official AE, MAHALA), sera, fusion and proto (its BEATs branch takes the view; its
stereo branch always hears both channels), the BEATs systems with the random-tiny BEATs and few
epochs: they run on a CPU in seconds, and their numbers say nothing about a real BEATs (a randomly
initialised encoder is close to a fixed random filterbank).

The default sizes fit about 10 minutes on 2 busy CPU cores; bigger runs:
    python benchmarks/views_study.py [--quick] [--seeds 4] [--machines fan,ToyDrone] [--seconds 1]
        [--n-source 12] [--n-test 12] [--epochs 3] [--ae-epochs 30] [--systems ae,sera,fusion,proto] [--no-record]
e.g. --seeds 5 --n-source 30 --n-test 32 --ae-epochs 100 for the official AE's epochs and tighter AUCs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish
from benchmarks.stereo_study import anomaly_kinds

import asdx
from asdx._atomic import atomic_write_text
from asdx.cli import main as asdx_main
from asdx.data import generate
from asdx.data.sounds import ANOMALY_KINDS
from asdx.features import VIEWS
from asdx.metrics import auc

SYSTEMS = ("ae", "sera", "fusion", "proto")
KINDS = ("all", *ANOMALY_KINDS)
DEFAULTS = {"seeds": 4, "machines": "fan,ToyDrone", "seconds": 1.0, "n_source": 12, "n_target": 3, "n_test": 12,
            "epochs": 3, "ae_epochs": 30}
QUICK = {"seeds": 1, "machines": "fan", "seconds": 1.0, "n_source": 8, "n_target": 2, "n_test": 4, "epochs": 1,
         "ae_epochs": 2}


def system_flags(system: str, args) -> list[str]:
    """Each system's CPU-sized settings (random-tiny BEATs, few epochs, larger learning rates)."""
    if system == "ae":
        return ["--epochs", str(args.ae_epochs)]
    common = ["--beats", "random-tiny", "--epochs", str(args.epochs), "--device", "cpu"]
    if system == "sera":
        return [*common, "--lr", "1e-3"]
    if system == "fusion":
        return [*common, "--lr", "1e-3", "--early-stopping", "validation-loss"]
    return [*common, "--size", "tiny", "--lr", "1e-3", "--batch-size", "8", "--threshold-scores", "loo"]


def kind_aucs(scores_csv: Path, kinds: dict) -> dict[str, float]:
    with open(scores_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    scores = np.array([float(r["score"]) for r in rows])
    kind = np.array([kinds[r["name"]] or "normal" for r in rows])
    normal = kind == "normal"
    out = {}
    for name in KINDS:
        anomalous = ~normal if name == "all" else kind == name
        chosen = normal | anomalous
        out[name] = float(auc(anomalous[chosen].astype(int), scores[chosen])) if anomalous.any() else float("nan")
    return out


def run_cell(root: Path, out: Path, system: str, view: str, seed: int, args, sizes: dict) -> dict:
    """{"omega": Ω, kind: AUC (mean over machines), "seconds": wall time} of one runner call."""
    name = f"{view}-seed{seed}"
    start = time.perf_counter()
    code = asdx_main(["run", system, "--machine", args.machines, "--data", str(root), "--out", str(out), "--name",
                      name, "--view", view, "--seed", str(seed), "--quiet", "--workers", "0",
                      *system_flags(system, args)])
    if code != 0:
        raise RuntimeError(f"asdx run {system} --view {view} (seed {seed}) exited with {code}")
    run = out / system / name
    metrics = json.loads((run / "metrics.json").read_text())
    cell = {"omega": float(metrics["official_score"]), "seconds": time.perf_counter() - start}
    per_machine = []
    for machine in args.machines.split(","):
        per_machine.append(kind_aucs(run / "machines" / machine / "test_scores.csv",
                                     anomaly_kinds(root, machine, seed, sizes)))
    for kind in KINDS:
        cell[kind] = float(np.nanmean([m[kind] for m in per_machine]))
    return cell


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def table(cells: dict, systems, seeds: int) -> list[str]:
    lines = ["| system | view | Ω | " + " | ".join(f"AUC {k}" for k in KINDS) + " | s / run |",
             "|---|---|---:|" + "---:|" * (len(KINDS) + 1)]
    for system in systems:
        for view in VIEWS:
            runs = [cells[system, view, s] for s in range(seeds)]
            lines.append(f"| {system} | {view} | {_mean_sd([r['omega'] for r in runs])} | "
                         + " | ".join(_mean_sd([r[k] for r in runs]) for k in KINDS)
                         + f" | {np.mean([r['seconds'] for r in runs]):.0f} |")
    lines += ["", "w1 − near, Ω, per seed:", "", "| system | " + " | ".join(f"seed {s}" for s in range(seeds))
              + " | mean |", "|---|" + "---:|" * (seeds + 1)]
    for system in systems:
        d = [cells[system, "w1", s]["omega"] - cells[system, "near", s]["omega"] for s in range(seeds)]
        lines.append(f"| {system} | " + " | ".join(f"{x:+.3f}" for x in d) + f" | {np.mean(d):+.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test of seconds, not recorded")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None, help=f"default {value}")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--work", default=None, help="data, runs and cached cells (default: ~/.cache/asdx/views-study)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    asdx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    systems = [s for s in args.systems.split(",") if s]
    sizes = {"seconds": args.seconds, "n_source": args.n_source, "n_target": args.n_target, "n_test": args.n_test}
    work = Path(args.work) if args.work else Path.home() / ".cache" / "asdx" / "views-study"
    tag = (f"{args.machines.replace(',', '+')}-s{args.seconds:g}-{args.n_source}+{args.n_target}-t{args.n_test}"
           f"-e{args.epochs}-ae{args.ae_epochs}")
    cells = {}
    start = time.perf_counter()
    for seed in range(args.seeds):
        root = generate(work / f"data-seed{seed}-{tag}", machines=args.machines, seed=seed, progress=False, **sizes)
        for system in systems:
            for view in VIEWS:
                path = work / "cells" / f"{system}-{view}-seed{seed}-{tag}.json"
                if path.exists():
                    cells[system, view, seed] = json.loads(path.read_text())
                    continue
                cell = run_cell(root, work / f"runs-{tag}", system, view, seed, args, sizes)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(cell, indent=1))
                cells[system, view, seed] = cell
                print(f"{system} {view} seed {seed}: Ω {cell['omega']:.3f}, {cell['seconds']:.0f} s", flush=True)
    total = time.perf_counter() - start
    command = "python benchmarks/views_study.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    section = [f"## views_study — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), "",
               f"Command: `{command}`. Synthetic noisy hall, machines {args.machines}, {args.seeds} seeds (data seed = "
               f"model seed), {args.n_source} source + {args.n_target} target train clips of {args.seconds:g} s, "
               f"{args.n_test} test clips per domain × label; `asdx run <system> --view <view>` on the CPU: ae "
               f"{args.ae_epochs} epochs; sera, fusion, proto with the random-tiny BEATs, {args.epochs} epochs "
               "(flags in benchmarks/views_study.py). Study wall time "
               f"{total / 60:.1f} min (cells cached by earlier runs count 0). Ω = the official score over the "
               "machines; AUC <kind> = the kind's anomalies against all normal test clips, mean over machines. "
               "Mean ± sd over seeds.", "", *table(cells, systems, args.seeds)]
    publish(section, record_it=not (args.no_record or args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
