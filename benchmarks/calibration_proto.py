"""Calibration of P_proto's gamma threshold: how optimistic are its leave-one-out train scores, and do
out-of-fold scores of fold networks fix it?

P_proto's leave-one-out (loo) train score takes the clip out of its group prototype, but the network that
embedded it trained on it (with the target clips oversampled), so the scores are optimistic and the
threshold too low. threshold_scores=kfold (asdx.systems.proto, docs/threshold_scores.md) trains `folds`
extra networks, each without one fold of clips, and puts their held-out scores on the final network's
scale (asdx.systems._threshold_scores.align_scores).

One cell = one machine and data seed (the model seed is ProtoConfig's). It runs ProtoSystem.fit_machine
with threshold_scores=kfold once (the final network is the same as with loo) and keeps, per clip: the final
network's loo scores, every fold network's raw held-out score and its reference (loo scores of its own
training clips), the test scores, and the time of each network (cells/<key>.npz). The schemes:

  loo                  the final network's leave-one-out scores (asdx's default before issue 19)
  kfold<k>-<alignment> out-of-fold scores, aligned ("none" = raw)
  ...+balanced         target scores repeated to weigh as much as the source ones (as the test set)

are thresholded as in benchmarks/calibration_ae.py (gamma, scipy, empirical). Optimism = the mean over
runs of the fraction of the threshold scores above the threshold, beside the fraction of normal test clips.

    python benchmarks/calibration_proto.py [--quick] [--epochs 15] [--seeds 2] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish
from benchmarks.calibration_ae import FITS, GOAL_MAX, GOAL_MEAN, GOAL_TOLERANCE, Q, rates, threshold_of

import asdx
from asdx.data import generate, machine_clips, resolve_machines
from asdx.data.loader import ClipSet
from asdx.splits import stratified_folds
from asdx.systems._threshold_scores import align_scores, balance_domains
from asdx.systems.base import SystemContext
from asdx.systems.proto import FOLD_FILE, ProtoConfig, ProtoSystem

MACHINES = ("fan", "gearboxEmu", "bearingEmu", "valveEmu")
FULL = {"seeds": 2, "epochs": 15, "lr": 1e-4, "folds": 3, "seconds": 2.0, "n_source": 40, "n_target": 6, "n_test": 20}
QUICK = {"seeds": 1, "epochs": 1, "lr": 1e-4, "folds": 2, "seconds": 1.0, "n_source": 12, "n_target": 4, "n_test": 3}


class TimedProto(ProtoSystem):
    """ProtoSystem that records the wall time of each network it trains (the final one and the fold ones)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds: dict[str, float] = {}

    def _train(self, machine, train, stores, folder, what=""):
        start = time.perf_counter()
        super()._train(machine, train, stores, folder, what)
        self.seconds[what or "final"] = time.perf_counter() - start


def train_cell(root: Path, machine: str, seed: int, epochs: int, folds: int, work: Path,
               lr: float = 1e-4) -> dict[str, np.ndarray]:
    """Fits P_proto (tiny, random-tiny BEATs) with threshold_scores=kfold; returns what the schemes need."""
    machine_dir = resolve_machines(root, machine)[0]
    train_clips, test_clips = machine_clips(machine_dir, "train"), machine_clips(machine_dir, "test")
    config = ProtoConfig(beats="random-tiny", size="tiny", epochs=epochs, lr=lr, seed=seed, device="cpu",
                         threshold_scores="kfold", folds=folds)
    folder = work / "runs" / f"{machine}-seed{seed}-e{epochs}-lr{lr:g}-k{folds}"
    system = TimedProto(config, SystemContext(device=torch.device("cpu"), progress=False, cache_dir=work / "cache"))
    train = ClipSet.from_clips(train_clips, 2, seconds=None)
    fitted = system.fit_machine(machine, train, folder)
    test = system.score_machine(ClipSet.from_clips(test_clips, 2, seconds=None))
    domains = np.array([c.domain for c in train_clips])
    fold = stratified_folds(domains, folds, config.seed)
    out = {"train_target": domains == "target", "fold": fold, "loo": fitted.scores, "test": test.scores,
           "test_target": np.array([c.domain == "target" for c in test_clips]),
           "test_anomaly": np.array([c.label != "normal" for c in test_clips]),
           "final_seconds": system.seconds["final"],
           "fold_seconds": np.array([v for k, v in system.seconds.items() if k != "final"])}
    raw, reference = np.full(len(domains), np.nan), np.full((folds, len(domains)), np.nan)
    for k in range(folds):
        with np.load(folder / f"fold{k}" / FOLD_FILE) as data:
            raw[fold == k] = data["raw"]
            reference[k, fold != k] = data["reference"]
    out["raw"], out["reference"] = raw, reference
    return out


def out_of_fold(cell: dict, alignment: str) -> np.ndarray:
    """The held-out scores of the fold networks aligned as ProtoSystem.fit_machine does (log by default)."""
    fold, scores = cell["fold"], np.full(len(cell["fold"]), np.nan)
    for k in range(int(fold.max()) + 1):
        held, kept = fold == k, fold != k
        scores[held] = align_scores(cell["raw"][held], cell["reference"][k, kept], cell["loo"][kept], alignment)
    return scores


def schemes(cell: dict, folds: int, alignments=("none", "ratio", "linear", "log")) -> dict:
    """{scheme: (threshold scores, test scores, training cost in final networks)}."""
    target = cell["train_target"]
    cost = 1.0 + float(cell["fold_seconds"].sum()) / float(cell["final_seconds"])
    out = {"loo": (cell["loo"], 1.0), "loo+balanced": (balance_domains(cell["loo"], target), 1.0)}
    for alignment in alignments:
        scores = out_of_fold(cell, alignment)
        out[f"kfold{folds}-{alignment}"] = (scores, cost)
        out[f"kfold{folds}-{alignment}+balanced"] = (balance_domains(scores, target), cost)
    return {name: (scores, cell["test"], c) for name, (scores, c) in out.items()}


def summarize(cells: dict, folds: int, fits=FITS) -> dict:
    rows: dict = {}
    for (machine, _), cell in cells.items():
        for name, (threshold_scores, test_scores, cost) in schemes(cell, folds).items():
            for fit in fits:
                threshold, _ = threshold_of(threshold_scores, fit)
                r = {**rates(cell, test_scores, threshold), "cost": cost, "machine": machine,
                     "train_flag": float(np.mean(threshold_scores > threshold))}
                rows.setdefault((name, fit), []).append(r)
    summary = {}
    for key, runs in rows.items():
        mean = {k: float(np.mean([r[k] for r in runs])) for k in (
            "normal_flag", "normal_flag_source", "normal_flag_target", "anomaly_flag", "auc", "cost", "train_flag")}
        per_machine = {m: float(np.mean([r["normal_flag"] for r in runs if r["machine"] == m]))
                       for m in sorted({r["machine"] for r in runs})}
        highest = max(r["normal_flag"] for r in runs)
        meets = abs(mean["normal_flag"] - GOAL_MEAN) <= GOAL_TOLERANCE + 1e-12 and highest <= GOAL_MAX
        summary[key] = {**mean, "worst_machine": max(per_machine.values()), "highest_run": highest,
                        "meets": bool(meets)}
    return summary


def table(summary: dict, fit: str) -> list[str]:
    lines = ["| threshold scores | threshold scores above | normal-flag | source | target | worst machine | "
             "highest run | anomaly-flag | training cost | goal |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (scheme, f), s in summary.items():
        if f == fit:
            lines.append(f"| {scheme} | {s['train_flag']:.3f} | {s['normal_flag']:.3f} | "
                         f"{s['normal_flag_source']:.3f} | {s['normal_flag_target']:.3f} | {s['worst_machine']:.3f} | "
                         f"{s['highest_run']:.2f} | {s['anomaly_flag']:.3f} | {s['cost']:.1f}x | "
                         f"{'met' if s['meets'] else 'NOT met'} |")
    return lines


def study(work: Path, sizes: dict, machines=MACHINES, log=print) -> dict:
    cells = {}
    for seed in range(sizes["seeds"]):
        data = f"data-seed{seed}-{sizes['n_source']}+{sizes['n_target']}-s{sizes['seconds']}-t{sizes['n_test']}"
        root = generate(work / data, machines=",".join(machines), seconds=sizes["seconds"],
                        n_source=sizes["n_source"], n_target=sizes["n_target"], n_test=sizes["n_test"], seed=seed,
                        progress=False)
        for machine in machines:
            key = (f"{machine}-seed{seed}-e{sizes['epochs']}-lr{sizes['lr']:g}-k{sizes['folds']}-s{sizes['seconds']}-"
                   f"{sizes['n_source']}+{sizes['n_target']}-t{sizes['n_test']}")
            path = work / "cells" / f"{key}.npz"
            if path.exists():
                with np.load(path) as data:
                    cells[machine, seed] = dict(data)
                log(f"{key}: cached")
                continue
            start = time.perf_counter()
            cell = train_cell(root, machine, seed, sizes["epochs"], sizes["folds"], work, sizes["lr"])
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial.npz")
            np.savez(partial, **cell)
            partial.replace(path)
            cells[machine, seed] = cell
            log(f"{key}: {time.perf_counter() - start:.0f} s")
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny config (seconds), not recorded")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {FULL['epochs']}")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {FULL['seeds']}")
    parser.add_argument("--lr", type=float, default=None, help="default 1e-4 (the report's)")
    parser.add_argument("--n-source", type=int, default=None, help=f"default {FULL['n_source']}")
    parser.add_argument("--n-target", type=int, default=None, help=f"default {FULL['n_target']}")
    parser.add_argument("--seconds", type=float, default=None, help=f"clip length, default {FULL['seconds']}")
    parser.add_argument("--machines", default=",".join(MACHINES))
    parser.add_argument("--work", default=None, help="data and cached cells (default: ~/.cache/asdx/calibration-proto)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    asdx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update({k: v for k, v in (("epochs", args.epochs), ("seeds", args.seeds), ("lr", args.lr),
                                    ("n_source", args.n_source), ("n_target", args.n_target),
                                    ("seconds", args.seconds)) if v is not None})
    machines = tuple(args.machines.split(","))
    work = Path(args.work) if args.work else Path.home() / ".cache" / "asdx" / "calibration-proto"
    start = time.perf_counter()
    cells = study(work, sizes, machines)
    summary = summarize(cells, sizes["folds"])
    section = [f"## calibration_proto — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), "",
               f"P_proto (tiny network, random-tiny BEATs, {sizes['epochs']} epochs, lr {sizes['lr']:g}, "
               f"{sizes['folds']} folds) "
               f"on synthetic {', '.join(machines)}, {sizes['seeds']} data seeds each, {sizes['n_source']} source + "
               f"{sizes['n_target']} target train clips of {sizes['seconds']:g} s, {sizes['n_test']} test clips per "
               f"domain × label; {len(cells)} runs, q = {Q}; study wall time "
               f"{(time.perf_counter() - start) / 60:.1f} min (cached cells count 0)."]
    for fit in FITS:
        section += ["", f"Threshold: {fit}.", "", *table(summary, fit)]
    section += ["", "threshold scores above = fraction of the threshold scores themselves above the threshold "
                "(optimism shows as fewer than the normal test clips); the other columns as in calibration_ae."]
    publish(section, record_it=not (args.no_record or args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
