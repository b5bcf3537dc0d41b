"""`asdx run`: train a system per machine, score the test clips, threshold, write and evaluate.

Run directory (runs/<system>/<name>/):
  config.json, environment.json, run.log
  machines/<machine>/checkpoint.pt       written every epoch (resumable)
  machines/<machine>/train_scores.csv    name,score of the train-normal clips
  machines/<machine>/threshold.json      gamma fit and threshold (q = 0.9)
  machines/<machine>/test_scores.csv     name,score,label,domain (blank where unknown)
  machines/<machine>/done.json           written last: the machine is finished
  submission/anomaly_score_<m>_section_00_test.csv, decision_result_<m>_section_00_test.csv
  metrics.json, metrics.csv              official metrics of the machines with ground truth
  report.html, report/<machine>.png
Every file is written atomically; Ctrl-C leaves finished files and checkpoints only.
The runner reads files and hands systems arrays: systems never touch the disk
except through the checkpoint path they are given.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdx._atomic import atomic_write_text
from asdx.data import load_clips, machine_clips, resolve_machines
from asdx.evaluation import MachineTruth, evaluate, result_csv_text, result_json
from asdx.scoring.gamma import GammaThreshold
from asdx.submission import write_submission
from asdx.systems import SYSTEMS

DEFAULT_SECONDS = 10.0  # system report §1: clips cropped to 10 s
THRESHOLD_Q = 0.9


@dataclass
class RunOptions:
    system: str
    machines: str = "all"
    data: Path = Path("data")
    out: Path = Path("runs")
    name: str | None = None
    resume: bool = False
    seconds: float = DEFAULT_SECONDS
    progress: bool = True
    notes: tuple[str, ...] = ()


def run_dir_for(options: RunOptions, config) -> Path:
    name = options.name or f"{options.machines.replace(',', '+')}-seed{config.seed}"
    return Path(options.out) / options.system / name


def _scores_csv(names, scores, labels=None, domains=None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "score", "label", "domain"])
    for i, (name, score) in enumerate(zip(names, scores)):
        label = "" if labels is None or labels[i] is None else int(labels[i] == "anomaly")
        domain = "" if domains is None or domains[i] is None else domains[i]
        writer.writerow([name, repr(float(score)), label, domain])
    return buffer.getvalue()


def _crop(waveforms: np.ndarray, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Crops clips longer than `seconds`; shorter clips keep their length (zero padding
    would teach reconstruction models silence)."""
    return waveforms[..., : int(round(seconds * sample_rate))]


def _load(clips, channels: int, options: RunOptions) -> np.ndarray:
    return _crop(load_clips(clips, channels=channels, seconds=None, progress=options.progress), options.seconds)


def run_machine(system_class, config, machine, machine_dir: Path, submission_dir: Path, options: RunOptions,
                log: logging.Logger) -> None:
    train = machine_clips(machine, "train")
    test = machine_clips(machine, "test")
    log.info("%s: %d train clips, %d test clips", machine.name, len(train), len(test))
    system = system_class(config)
    domains = np.array([clip.domain or "source" for clip in train])
    system.fit(_load(train, system.input_channels, options), domains, checkpoint=machine_dir / "checkpoint.pt",
               progress=options.progress)
    train_scores = np.asarray(system.train_scores_, dtype=np.float64)
    atomic_write_text(machine_dir / "train_scores.csv", _scores_csv([c.name for c in train], train_scores))
    threshold = GammaThreshold(q=THRESHOLD_Q).fit(train_scores)
    atomic_write_text(machine_dir / "threshold.json", json.dumps(threshold.to_dict(), indent=2))
    test_scores = np.asarray(system.score(_load(test, system.input_channels, options)), dtype=np.float64)
    decisions = threshold.decide(test_scores)
    names = [clip.name for clip in test]
    atomic_write_text(machine_dir / "test_scores.csv",
                      _scores_csv(names, test_scores, [c.label for c in test], [c.domain for c in test]))
    write_submission(submission_dir, machine.name, names, test_scores, decisions)
    atomic_write_text(machine_dir / "done.json", json.dumps({"machine": machine.name, "threshold": threshold.threshold_}))
    log.info("%s: done (threshold %.6g, %d of %d test clips flagged)", machine.name, threshold.threshold_,
             int(decisions.sum()), len(decisions))


def _ground_truth(run_dir: Path) -> dict[str, MachineTruth]:
    """Machines whose every test clip has a known label and domain, from test_scores.csv."""
    truth = {}
    for done in sorted((run_dir / "machines").glob("*/done.json")):
        with open(done.parent / "test_scores.csv", newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda row: row["name"])
        if rows and all(row["label"] != "" and row["domain"] != "" for row in rows):
            truth[done.parent.name] = MachineTruth(
                names=tuple(row["name"] for row in rows),
                labels=np.array([int(row["label"]) for row in rows], dtype=np.int8),
                domains=np.array([row["domain"] == "target" for row in rows], dtype=np.int8),
                origin=str(done.parent / "test_scores.csv"))
    return truth


def evaluate_run(run_dir: Path):
    """Official metrics of the finished machines that have ground truth; None if there are none."""
    truth = _ground_truth(run_dir)
    if not truth:
        return None
    evaluation = evaluate(run_dir / "submission", truth, machines=sorted(truth))
    atomic_write_text(run_dir / "metrics.json", json.dumps(result_json(evaluation), indent=2))
    atomic_write_text(run_dir / "metrics.csv", result_csv_text(evaluation))
    return evaluation


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"asdx.run.{run_dir}")
    log.setLevel(logging.INFO)
    if not log.handlers:
        handler = logging.FileHandler(run_dir / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    return log


def run(options: RunOptions, config):
    """Runs options.system on the selected machines; returns (run_dir, evaluation or None)."""
    import asdx
    from asdx.report import write_report

    if options.system not in SYSTEMS:
        raise ValueError(f"system: unknown {options.system!r}; available: {', '.join(sorted(SYSTEMS))}.")
    system_class = SYSTEMS[options.system].system
    data = Path(options.data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data directory not found. Point --data (or $ASDX_DATA) at a DCASE-layout "
                                f"root, or make a synthetic one with `asdx synth --out {data}`.")
    machines = resolve_machines(data, options.machines)
    run_dir = run_dir_for(options, config)
    if (run_dir / "config.json").exists() and not options.resume:
        raise FileExistsError(f"{run_dir}: a run with this name exists; pass --resume to continue it "
                              "or --name for a new one.")
    (run_dir / "machines").mkdir(parents=True, exist_ok=True)
    (run_dir / "submission").mkdir(exist_ok=True)
    resolved = {"system": options.system, "config": dataclasses.asdict(config), "machines": [m.name for m in machines],
                "data": str(data.resolve()), "seconds": options.seconds, "threshold_q": THRESHOLD_Q,
                "notes": list(options.notes)}
    atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2))
    atomic_write_text(run_dir / "environment.json", json.dumps(asdx.info(), indent=2))
    log = _logger(run_dir)
    log.info("run %s: %s on %s", run_dir, options.system, ", ".join(m.name for m in machines))
    for machine in machines:
        machine_dir = run_dir / "machines" / machine.name
        if (machine_dir / "done.json").exists():
            log.info("%s: finished in an earlier run, skipped", machine.name)
            continue
        machine_dir.mkdir(exist_ok=True)
        run_machine(system_class, config, machine, machine_dir, run_dir / "submission", options, log)
    evaluation = evaluate_run(run_dir)
    write_report(run_dir)
    log.info("run finished")
    return run_dir, evaluation
