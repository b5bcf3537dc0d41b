"""Stereo study: does P_proto, which hears both microphones, detect spatial anomalies better than the channel-0 AE?

The synthetic set has four anomaly kinds (asdx.data.sounds; anomaly index i % 4): "spectral",
"rattle", "drift" and "spatial". A spatial anomaly is a loose part radiating from a second
position next to the far microphone: the near channel gets only a faint delayed copy
(0.03-0.08 of the part), the far channel a loud one (0.6-1.0), so mostly the inter-channel
cues change. The official AE baseline listens to channel 0 (near) only.

For every seed (data seed = model seed) and machine this study synthesises a set, then trains
and scores three systems on the same clips:
  - proto: P_proto, tiny network, random-tiny BEATs, spatial cues on (ILD, IPD, mid/side, GCC);
  - proto --no-use-spatial: the ablation, near and far log-mel only;
  - ae: the official autoencoder (MAHALA, channel 0, the official 100 epochs).
AUC per anomaly kind = the kind's anomalous test clips (both domains) against all normal test
clips of the same set (both domains); "all" = every anomaly against the normals.

    python benchmarks/stereo_study.py [--quick] [--seeds 5] [--machines fan,bearingEmu] [--no-record]
"""

from __future__ import annotations

import argparse
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

import asdx
from asdx._atomic import atomic_write_text
from asdx.data import generate, machine_clips, resolve_machines
from asdx.data.loader import ClipSet
from asdx.data.machines import resolve_registry
from asdx.data.sounds import ANOMALY_KINDS
from asdx.data.synth import plan
from asdx.metrics import auc
from asdx.systems.ae import AEConfig, AESystem
from asdx.systems.base import SystemContext
from asdx.systems.proto import ProtoConfig, ProtoSystem

MACHINES = ("fan", "bearingEmu")
SYSTEMS = ("proto", "proto-no-spatial", "ae")
KINDS = ("all", *ANOMALY_KINDS)
# P_proto: tiny network, random-tiny BEATs; lr and epochs far from the report's (1e-4, 50) so that a
# CPU run of a few seconds trains the network
PROTO = dict(beats="random-tiny", size="tiny", epochs=20, batch_size=8, lr=1e-3, device="cpu")
AE_EPOCHS = 100  # the official baseline's
FULL = {"seeds": 5, "seconds": 1.0, "n_source": 30, "n_target": 6, "n_test": 32}
QUICK = {"seeds": 1, "seconds": 1.0, "n_source": 12, "n_target": 3, "n_test": 8}


def sizes_key(sizes: dict) -> str:
    return f"s{sizes['seconds']:g}-{sizes['n_source']}+{sizes['n_target']}-t{sizes['n_test']}"


def anomaly_kinds(root: Path, machine: str, seed: int, sizes: dict) -> dict[str, str | None]:
    """Test clip file name -> anomaly kind (None for normal clips), from the generator's plan."""
    entry = resolve_registry(machine)[0]
    return {c.path.name: c.anomaly for c in plan(Path(root), entry, seed, sizes) if c.split == "test"}


def kind_aucs(test_clips, scores: np.ndarray, kinds: dict) -> dict[str, float]:
    """AUC of each anomaly kind's clips against every normal clip of the test set (both domains)."""
    scores = np.asarray(scores, dtype=np.float64)
    kind = np.array([kinds[Path(c.path).name] or "normal" for c in test_clips])
    normal = kind == "normal"
    out = {}
    for name in KINDS:
        anomalous = ~normal if name == "all" else kind == name
        chosen = normal | anomalous
        out[name] = float(auc(anomalous[chosen].astype(int), scores[chosen]))
    return out


def _context(cache: Path | None) -> SystemContext:
    return SystemContext(device=torch.device("cpu"), progress=False, cache_dir=cache)


def proto_scores(train: list, test: list, seed: int, folder: Path, use_spatial: bool, **overrides) -> np.ndarray:
    """P_proto's test scores (fit_machine + score_machine, what `asdx run proto` does per machine)."""
    config = ProtoConfig(**{**PROTO, **overrides, "seed": seed, "use_spatial": use_spatial})
    system = ProtoSystem(config, _context(folder.parent / "feature_cache"))
    system.fit_machine(train[0].machine, ClipSet.from_clips(train, 2, seconds=None), folder)
    return system.score_machine(ClipSet.from_clips(test, 2, seconds=None)).scores


def ae_scores(train: list, test: list, seed: int, folder: Path, epochs: int = AE_EPOCHS) -> np.ndarray:
    """The official AE on channel 0 (MAHALA), as `asdx run ae` runs it per machine."""
    system = AESystem(AEConfig(epochs=epochs, seed=seed, channel=0, device="cpu"), _context(None))
    system.fit_machine(train[0].machine, ClipSet.from_clips(train, system.input_channels, seconds=None), folder)
    return system.score_machine(ClipSet.from_clips(test, system.input_channels, seconds=None)).scores


def run_cell(root: Path, machine: str, seed: int, sizes: dict, work: Path, systems=SYSTEMS,
             proto_epochs: int = PROTO["epochs"], ae_epochs: int = AE_EPOCHS) -> dict:
    """{system: {kind: AUC, "seconds": train + score wall time}} on one machine and seed."""
    machine_dir = resolve_machines(root, machine)[0]
    train, test = machine_clips(machine_dir, "train"), machine_clips(machine_dir, "test")
    kinds = anomaly_kinds(root, machine, seed, sizes)
    out = {}
    for name in systems:
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if name == "ae":
            scores = ae_scores(train, test, seed, folder, ae_epochs)
        else:
            scores = proto_scores(train, test, seed, folder, use_spatial=name == "proto", epochs=proto_epochs)
        out[name] = {**kind_aucs(test, scores, kinds), "seconds": time.perf_counter() - start}
    return out


def study(work: Path, sizes: dict, machines=MACHINES, proto_epochs: int = PROTO["epochs"],
          ae_epochs: int = AE_EPOCHS, log=print) -> dict:
    """Every (machine, seed) cell, cached as JSON under work/cells (a rerun computes only the missing ones)."""
    cells = {}
    for seed in range(sizes["seeds"]):
        root = generate(work / f"data-seed{seed}-{sizes_key(sizes)}", machines=",".join(machines),
                        seconds=sizes["seconds"], n_source=sizes["n_source"], n_target=sizes["n_target"],
                        n_test=sizes["n_test"], seed=seed, progress=False)
        for machine in machines:
            key = f"{machine}-seed{seed}-{sizes_key(sizes)}-proto{proto_epochs}-ae{ae_epochs}"
            path = work / "cells" / f"{key}.json"
            if path.exists():
                cells[machine, seed] = json.loads(path.read_text())
                log(f"{key}: cached")
                continue
            start = time.perf_counter()
            cells[machine, seed] = run_cell(root, machine, seed, sizes, work / "runs" / key,
                                            proto_epochs=proto_epochs, ae_epochs=ae_epochs)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(cells[machine, seed], indent=1))
            log(f"{key}: {time.perf_counter() - start:.0f} s; spatial AUC " +
                ", ".join(f"{s} {cells[machine, seed][s]['spatial']:.3f}" for s in SYSTEMS))
    return cells


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def table(cells: dict) -> list[str]:
    """Mean ± sd over the cells per system and kind, then every cell's spatial AUCs and the differences."""
    lines = ["| system | " + " | ".join(f"AUC {k}" for k in KINDS) + " | s / cell |",
             "|---|" + "---:|" * (len(KINDS) + 1)]
    for name in SYSTEMS:
        lines.append(f"| {name} | " + " | ".join(_mean_sd([c[name][k] for c in cells.values()]) for k in KINDS)
                     + f" | {np.mean([c[name]['seconds'] for c in cells.values()]):.1f} |")
    lines += ["", "| machine | seed | proto spatial | proto-no-spatial spatial | ae spatial | proto − ae | "
                  "proto − no-spatial |", "|---|---:|---:|---:|---:|---:|---:|"]
    for (machine, seed), c in sorted(cells.items()):
        p, n, a = c["proto"]["spatial"], c["proto-no-spatial"]["spatial"], c["ae"]["spatial"]
        lines.append(f"| {machine} | {seed} | {p:.3f} | {n:.3f} | {a:.3f} | {p - a:+.3f} | {p - n:+.3f} |")
    return lines


def findings(cells: dict) -> list[str]:
    """The paired comparisons on the spatial anomalies, computed from the cells."""
    diff_ae = np.array([c["proto"]["spatial"] - c["ae"]["spatial"] for c in cells.values()])
    diff_cues = np.array([c["proto"]["spatial"] - c["proto-no-spatial"]["spatial"] for c in cells.values()])
    n = len(cells)

    def spread(d):
        return (f"mean {d.mean():+.3f}" + (f", sd {d.std(ddof=1):.3f}" if n > 1 else "")
                + f", smallest {d.min():+.3f}, largest {d.max():+.3f}")

    return [f"- proto vs ae, spatial-anomaly AUC: proto higher in {int((diff_ae > 0).sum())} of {n} cells; "
            f"difference {spread(diff_ae)}.",
            f"- proto with vs without the spatial cues, spatial-anomaly AUC: with the cues higher in "
            f"{int((diff_cues > 0).sum())} of {n} cells; difference {spread(diff_cues)}."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny config (seconds), not recorded")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {FULL['seeds']}")
    parser.add_argument("--machines", default=",".join(MACHINES))
    parser.add_argument("--proto-epochs", type=int, default=PROTO["epochs"])
    parser.add_argument("--ae-epochs", type=int, default=AE_EPOCHS)
    parser.add_argument("--work", default=None,
                        help="data, runs and cached cells (default: ~/.cache/asdx/stereo-study)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    asdx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    sizes = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        sizes["seeds"] = args.seeds
    machines = tuple(m.strip() for m in args.machines.split(",") if m.strip())
    work = Path(args.work) if args.work else Path.home() / ".cache" / "asdx" / "stereo-study"
    start = time.perf_counter()
    cells = study(work, sizes, machines, args.proto_epochs, args.ae_epochs)
    total_s = time.perf_counter() - start
    arguments = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/stereo_study.py" + "".join(f" {a}" for a in arguments)
    section = [f"## stereo_study — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), "",
               f"Command: `{command}`. Synthetic {' and '.join(machines)}, {sizes['seeds']} seeds (data seed = model "
               f"seed), {sizes['n_source']} source + {sizes['n_target']} target train clips of {sizes['seconds']:g} s, "
               f"{sizes['n_test']} test clips per domain × label (anomaly kinds in turn: {sizes['n_test'] // 4} "
               f"spatial anomalies per domain); {len(cells)} cells; study wall time {total_s / 60:.1f} min (cells "
               "cached by earlier runs count 0).",
               f"proto = P_proto, tiny network, random-tiny BEATs, {args.proto_epochs} epochs, lr {PROTO['lr']:g}, "
               f"batch {PROTO['batch_size']}, other settings the defaults (target_share 0.2, mixup); "
               "proto-no-spatial = the same with `--no-use-spatial` (near and far log-mel only, no ILD, IPD, "
               f"mid/side, GCC); ae = the official AE, channel 0 (near), MAHALA, {args.ae_epochs} epochs, "
               "defaults otherwise (threshold_scores holdout: 10 % of the train clips held out).",
               "AUC <kind> = the kind's anomalous test clips (both domains) against all normal test clips of the "
               "same set (both domains); AUC all = every anomaly against the normals. Mean ± sd over the cells; "
               "s / cell = train + score wall time of one system on one cell.", "",
               *table(cells), "", *findings(cells)]
    publish(section, record_it=not (args.no_record or args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
