"""`asdx run`: check everything, run a system's global and per-machine stages, threshold, write, evaluate.

Run directory (runs/<system>/<name>/):
  config.json, environment.json, run.log, notes.json
  global/                               the global stage (systems that have one) and its done.json
  machines/<machine>/                   the system's own files (checkpoints, banks)
  machines/<machine>/train_scores.csv   name,score,<sub-scores...> of every train clip, as the system scored it
                                        (held out where it can: see asdx.systems; the AE's final model scores
                                        clips it trained on)
  machines/<machine>/threshold_scores.csv  score: the scores the gamma was fitted on, when the system gives its
                                        own (MachineScores.threshold_scores; the AE's held-out ones); absent: the
                                        train_scores.csv scores
  machines/<machine>/threshold.json     gamma fit and threshold (q, default 0.9) of those scores
  machines/<machine>/test_scores.csv    name,score,<sub-scores...>,label,domain (blank where unknown)
  machines/<machine>/done.json          written last: the machine is finished
  submission/anomaly_score_<m>_section_00_test.csv, decision_result_<m>_section_00_test.csv
  metrics.json, metrics.csv             official metrics of the machines with ground truth
  report.html, report/<machine>.png
Every file is written atomically. Everything that can be checked is checked
before the first folder is made: the config, the device, the machines, every
selected clip's WAV header (and the samples of float WAVs, which can hold NaN). A failure is written to run.log; rerunning a run
that finished no machine starts it afresh, a run with finished machines needs
--resume, and --resume with another config is refused naming the keys.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asdx import distributed
from asdx._atomic import atomic_write_text
from asdx.data import machine_clips, resolve_machines
from asdx.data.dataset import MachineDir, list_machines, split_dir
from asdx.data.loader import ClipSet, check_headers
from asdx.evaluation import MachineTruth, evaluate, result_csv_text, result_json
from asdx.scoring.gamma import GammaFitWarning
from asdx.scoring.threshold import GammaThreshold
from asdx.submission import write_submission
from asdx.systems import SYSTEMS
from asdx.systems.base import MachineScores, SystemContext

DEFAULT_SECONDS = 10.0  # system report §1: clips cropped to 10 s
THRESHOLD_Q = 0.9  # system report §1: gamma fit, 90th percentile
GLOBAL_DIR = "global"
THRESHOLD_SCORES_FILE = "threshold_scores.csv"


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
    threshold_q: float = THRESHOLD_Q
    workers: int = 0
    cache_dir: Path | None = None  # default: <out>/cache

    def __post_init__(self):
        if not 0.0 < float(self.threshold_q) < 1.0:
            raise ValueError(f"threshold_q: expected a quantile in (0, 1), got {self.threshold_q!r}.")
        if not float(self.seconds) > 0:
            raise ValueError(f"seconds: expected > 0, got {self.seconds!r}.")
        if int(self.workers) != self.workers or self.workers < 0:
            raise ValueError(f"workers: expected an integer >= 0, got {self.workers!r}.")


@dataclass
class _Plan:
    """Everything run() checked before making a folder."""

    machines: list[MachineDir]
    train: dict[str, list]
    test: dict[str, list]
    lengths: dict[tuple[str, str], np.ndarray]
    global_machines: list[MachineDir] = field(default_factory=list)
    validation: dict[str, list] = field(default_factory=dict)  # labelled test clips of global machines


def run_dir_for(options: RunOptions, config) -> Path:
    name = options.name or f"{options.machines.replace(',', '+')}-seed{config.seed}"
    return Path(options.out) / options.system / name


# ---------------------------------------------------------------------- checks before any folder
def _check_split(machine: MachineDir, split: str) -> list:
    clips = machine_clips(machine, split)
    if not clips:
        raise ValueError(f"{split_dir(machine, split)}: no WAV files in the {split} folder of machine {machine.name}.")
    return clips


def _plan(options: RunOptions, system) -> _Plan:
    data = Path(options.data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: data directory not found. Point --data (or $ASDX_DATA) at a DCASE-layout "
                                f"root, or make a synthetic one with `asdx synth --out {data}`.")
    machines = resolve_machines(data, options.machines)
    global_machines = system.global_machines(list_machines(data)) if system.uses_global_stage else []
    plan = _Plan(machines, {}, {}, {}, global_machines)
    channels = system.input_channels
    for machine in {m.name: m for m in [*machines, *global_machines]}.values():
        plan.train[machine.name] = _check_split(machine, "train")
        plan.lengths[machine.name, "train"] = check_headers(plan.train[machine.name], channels)
    for machine in machines:
        system.check_training_clips(machine.name, plan.train[machine.name])
        plan.test[machine.name] = _check_split(machine, "test")
        plan.lengths[machine.name, "test"] = check_headers(plan.test[machine.name], channels)
    if getattr(system, "wants_global_validation", False):
        for machine in global_machines:
            clips = machine_clips(machine, "test")
            if clips and all(c.label is not None and c.domain is not None for c in clips):
                plan.validation[machine.name] = clips
                if (machine.name, "test") not in plan.lengths:
                    plan.lengths[machine.name, "test"] = check_headers(clips, channels)
    return plan


def _check_cache_dir(folder: Path) -> None:
    """The feature cache must be a folder we can write, or creatable in one (checked without creating it)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{folder}: cannot hold the feature cache: {existing} is not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{folder}: the feature cache folder is not writable ({existing}).")


def _resolved_config(options: RunOptions, config) -> dict:
    return {"system": options.system, "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
            "seconds": float(options.seconds), "threshold_q": float(options.threshold_q)}


def _differing_keys(stored: dict, wanted: dict) -> list[str]:
    keys = []
    for key in sorted(set(stored) | set(wanted)):
        if key == "config":
            inner_stored, inner_wanted = stored.get("config", {}), wanted.get("config", {})
            keys += [f"{k} ({inner_stored.get(k)!r} -> {inner_wanted.get(k)!r})"
                     for k in sorted(set(inner_stored) | set(inner_wanted)) if inner_stored.get(k) != inner_wanted.get(k)]
        elif key in ("system", "seconds", "threshold_q") and stored.get(key) != wanted.get(key):
            keys.append(f"{key} ({stored.get(key)!r} -> {wanted.get(key)!r})")
    return keys


def _prepare_run_dir(run_dir: Path, options: RunOptions, resolved: dict) -> str:
    """Decides how an existing run directory is used: 'new', 'restart' (it finished nothing and --resume was not
    given: partial outputs go) or 'resume' (same config; finished machines and checkpoints are kept)."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return "new"
    stored = json.loads(config_path.read_text())
    finished = list((run_dir / "machines").glob("*/done.json"))
    if not finished and not options.resume:
        return "restart"
    if not options.resume:
        raise FileExistsError(f"{run_dir}: a run with this name has finished machines; pass --resume to continue "
                              "it or --name for a new one.")
    differing = _differing_keys(stored, resolved)
    if differing:
        raise ValueError(f"{run_dir}: --resume with a different config than the stored one; differing keys: "
                         f"{', '.join(differing)}. Use --name for a new run.")
    return "resume"


# ---------------------------------------------------------------------- logging and progress
def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger(f"asdx.run.{run_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    _close_logger(log)
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _close_logger(log: logging.Logger) -> None:
    """Detaches and closes a run's handlers: a long-lived process running many runs keeps no run.log open."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


class _Stages:
    """`machine k/N: <name>: <stage>` lines on stderr (with --quiet: only in run.log)."""

    def __init__(self, log: logging.Logger, show: bool):
        self.log, self.show = log, show

    def __call__(self, text: str) -> None:
        self.log.info(text)
        if self.show:
            print(f"asdx: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- score files
def scores_csv(names, scores: MachineScores, labels=None, domains=None) -> str:
    """name,score,<sub-scores>[,label,domain] rows (label 1 = anomaly, blank where unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = scores.columns()
    with_truth = labels is not None
    writer.writerow(["name", *columns, *(["label", "domain"] if with_truth else [])])
    for i, name in enumerate(names):
        row = [name, *(repr(float(values[i])) for values in columns.values())]
        if with_truth:
            row.append("" if labels[i] is None else int(labels[i] == "anomaly"))
            row.append("" if domains[i] is None else domains[i])
        writer.writerow(row)
    return buffer.getvalue()


def _check_scores(scores: MachineScores, n: int, what: str) -> MachineScores:
    if not isinstance(scores, MachineScores):
        raise TypeError(f"{what}: a system must return MachineScores, got {type(scores).__name__}.")
    if len(scores) != n:
        raise ValueError(f"{what}: {len(scores)} scores for {n} clips.")
    if not np.all(np.isfinite(scores.scores)):
        raise ValueError(f"{what}: the system produced non-finite scores.")
    return scores


# ---------------------------------------------------------------------- the global stage
def _file_list(clips: list, lengths: np.ndarray) -> list:
    return sorted((str(Path(c.path).resolve()), int(Path(c.path).stat().st_size), int(n))
                  for c, n in zip(clips, lengths))


def _global_key(options: RunOptions, system, clips: list, lengths: np.ndarray, validation: ClipSet | None) -> str:
    description = {"system": options.system, "config": system.global_config(), "seconds": float(options.seconds),
                   "files": _file_list(clips, lengths)}
    if validation is not None:  # early stopping looked at these clips: they shape the model too
        description["validation_files"] = _file_list(validation.clips, validation.lengths)
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def _finished_global(folder: Path, key: str) -> bool:
    marker = folder / "done.json"
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def _global_sets(plan: _Plan, options: RunOptions) -> tuple[ClipSet, ClipSet | None]:
    """The global stage's train clips and (for systems that want it) the labelled test clips of its machines."""
    clips = [c for m in plan.global_machines for c in plan.train[m.name]]
    lengths = np.concatenate([plan.lengths[m.name, "train"] for m in plan.global_machines])
    train = ClipSet(clips, lengths, options.seconds, options.workers, options.progress, "global train clips")
    if not plan.validation:
        return train, None
    names = [m.name for m in plan.global_machines if m.name in plan.validation]
    validation = ClipSet([c for m in names for c in plan.validation[m]],
                         np.concatenate([plan.lengths[m, "test"] for m in names]), options.seconds, options.workers,
                         options.progress, "global validation clips")
    return train, validation


def _run_global_stage(system, plan: _Plan, options: RunOptions, run_dir: Path, stage: _Stages) -> dict:
    train, validation = _global_sets(plan, options)
    key = _global_key(options, system, train.clips, train.lengths, validation)
    folder = run_dir / GLOBAL_DIR
    info = {"key": key, "machines": [m.name for m in plan.global_machines], "clips": len(train),
            "validation_clips": 0 if validation is None else len(validation)}
    if _finished_global(folder, key):
        distributed.broadcast_object({"train": False})
        stage(f"global stage: finished earlier in this run (key {key[:12]}), loaded")
        system.load_global(folder)
        return {**info, "reused_from": str(folder)}
    for other in sorted(Path(options.out, options.system).glob(f"*/{GLOBAL_DIR}")):
        if other != folder and _finished_global(other, key):
            distributed.broadcast_object({"train": False})
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(other, folder)
            stage(f"global stage: reused the model of {other.parent} (same system, config and training files; "
                  f"key {key[:12]}); not retrained")
            system.load_global(folder)
            return {**info, "reused_from": str(other)}
    folder.mkdir(exist_ok=True)
    distributed.broadcast_object({"train": True})  # torchrun: the other ranks join the training
    stage(f"global stage: training on {len(train)} train clips of {len(plan.global_machines)} machines "
          f"({', '.join(info['machines'])})"
          + ("" if validation is None else f", {len(validation)} labelled test clips for early stopping"))
    system.fit_global(train, folder, validation)
    atomic_write_text(folder / "done.json", json.dumps(info, indent=2))
    system.load_global(folder)  # the per-machine stage always starts from what is on disk
    return {**info, "reused_from": None}


# ---------------------------------------------------------------------- one machine
def run_machine(system, machine: MachineDir, plan: _Plan, options: RunOptions, run_dir: Path, stage) -> None:
    machine_dir = run_dir / "machines" / machine.name
    machine_dir.mkdir(exist_ok=True)
    train_clips, test_clips = plan.train[machine.name], plan.test[machine.name]
    stage(f"{machine.name}: {len(train_clips)} train clips, {len(test_clips)} test clips")
    train = ClipSet(train_clips, plan.lengths[machine.name, "train"], options.seconds, options.workers,
                    options.progress, f"{machine.name} train")
    train_scores = _check_scores(system.fit_machine(machine.name, train, machine_dir), len(train_clips),
                                 f"{machine.name} train scores")
    atomic_write_text(machine_dir / "train_scores.csv", scores_csv([c.name for c in train_clips], train_scores))
    # fitted on the honest scores: MachineScores.threshold_scores when the system gives them (e.g. held-out clips)
    with warnings.catch_warnings():  # a fallback is a run note (below), not a warning amid the progress lines
        warnings.simplefilter("ignore", GammaFitWarning)
        threshold = GammaThreshold(q=options.threshold_q).fit(train_scores.for_threshold())
    if threshold.fallback_reason_ is not None:
        system.context.note(f"{machine.name}: gamma threshold by {threshold.method_}: {threshold.fallback_reason_}")
    atomic_write_text(machine_dir / "threshold.json", json.dumps(threshold.to_dict(), indent=2))
    stage(f"{machine.name}: scoring")
    test = ClipSet(test_clips, plan.lengths[machine.name, "test"], options.seconds, options.workers,
                   options.progress, f"{machine.name} test")
    test_scores = _check_scores(system.score_machine(test), len(test_clips), f"{machine.name} test scores")
    decisions = threshold.decide(test_scores.scores)
    names = [clip.name for clip in test_clips]
    atomic_write_text(machine_dir / "test_scores.csv",
                      scores_csv(names, test_scores, [c.label for c in test_clips], [c.domain for c in test_clips]))
    write_submission(run_dir / "submission", machine.name, names, test_scores.scores, decisions)
    if train_scores.threshold_scores is not None:  # what the report plots under the fitted gamma
        atomic_write_text(machine_dir / THRESHOLD_SCORES_FILE,
                          "score\n" + "".join(f"{float(s)!r}\n" for s in train_scores.threshold_scores))
    atomic_write_text(machine_dir / "done.json", json.dumps({"machine": machine.name, "threshold": threshold.threshold_}))
    stage(f"{machine.name}: done (threshold {threshold.threshold_:.6g}, {int(decisions.sum())} of {len(decisions)} "
          "test clips flagged)")


# ---------------------------------------------------------------------- evaluation
def _ground_truth(run_dir: Path) -> dict[str, MachineTruth]:
    """Machines whose every test clip has a known label and domain, from test_scores.csv."""
    truth = {}
    for done in sorted((run_dir / "machines").glob("*/done.json")):
        with open(done.parent / "test_scores.csv", newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda row: row["name"])
        if rows and all(row.get("label") not in (None, "") and row.get("domain") not in (None, "") for row in rows):
            truth[done.parent.name] = MachineTruth(
                names=tuple(row["name"] for row in rows),
                labels=np.array([int(row["label"]) for row in rows], dtype=np.int8),
                domains=np.array([row["domain"] == "target" for row in rows], dtype=np.int8),
                origin=str(done.parent / "test_scores.csv"))
    return truth


def read_notes(run_dir: Path) -> list[str]:
    path = Path(run_dir) / "notes.json"
    return json.loads(path.read_text()) if path.exists() else []


def evaluate_run(run_dir: Path):
    """Official metrics of the finished machines that have ground truth; None if there are none."""
    truth = _ground_truth(run_dir)
    if not truth:
        return None
    evaluation = evaluate(run_dir / "submission", truth, machines=sorted(truth))
    metrics = result_json(evaluation)
    metrics["notes"] = read_notes(run_dir)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(run_dir / "metrics.csv", result_csv_text(evaluation))
    return evaluation


# ---------------------------------------------------------------------- the run
def _clear_unfinished(run_dir: Path) -> None:
    """A restart of a run that finished no machine: its partial outputs go, the global stage stays (it is keyed)."""
    for name in ("machines", "submission", "report"):
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name)
    for name in ("metrics.json", "metrics.csv", "report.html", "notes.json"):
        (run_dir / name).unlink(missing_ok=True)


def make_system(options: RunOptions, config, progress: bool | None = None, log: logging.Logger | None = None):
    """The system object for options.system with its context (device resolved, cache folder, notes)."""
    from asdx.config import resolve_device

    entry = SYSTEMS[options.system]
    device = resolve_device(getattr(config, "device", "cpu"))
    cache = Path(options.cache_dir) if options.cache_dir is not None else Path(options.out) / "cache"
    context = SystemContext(device=device, progress=options.progress if progress is None else progress,
                            workers=options.workers, cache_dir=cache, log=log or logging.getLogger("asdx.system"),
                            notes=list(options.notes))
    return entry.system(config, context)


def run(options: RunOptions, config):
    """Runs options.system on the selected machines; returns (run_dir, evaluation or None)."""
    if options.system not in SYSTEMS:
        raise ValueError(f"system: unknown {options.system!r}; available: {', '.join(sorted(SYSTEMS))}.")
    me = distributed.init_from_environment(getattr(config, "device", "auto"))
    if not me.is_main:
        return _run_as_worker(options, config)
    system = make_system(options, config)
    plan = _plan(options, system)
    _check_cache_dir(Path(options.cache_dir) if options.cache_dir is not None else Path(options.out) / "cache")
    system.prepare()
    run_dir = run_dir_for(options, config)
    resolved = _resolved_config(options, config)
    mode = _prepare_run_dir(run_dir, options, resolved)

    (run_dir / "machines").mkdir(parents=True, exist_ok=True)
    log = _logger(run_dir)
    try:
        return _run_logged(options, system, plan, run_dir, resolved, mode, log)
    finally:
        _close_logger(log)  # also on failure: run.log is closed when run() returns or raises


def _run_logged(options: RunOptions, system, plan: _Plan, run_dir: Path, resolved: dict, mode: str,
                log: logging.Logger):
    """The body of run() once run.log is open; run() closes it."""
    import asdx
    from asdx.report import write_report

    system.context.log = log
    for note in system.context.notes:  # noted while preparing, before the log existed
        log.info("note: %s", note)
    stage = _Stages(log, options.progress)
    if mode == "restart":
        _clear_unfinished(run_dir)
        (run_dir / "machines").mkdir(exist_ok=True)
        log.info("rerun of a run that finished no machine: starting afresh")
    (run_dir / "submission").mkdir(exist_ok=True)
    resolved.update(machines=[m.name for m in plan.machines], data=str(Path(options.data).resolve()),
                    notes=list(options.notes))
    atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2))
    atomic_write_text(run_dir / "environment.json", json.dumps(asdx.info(), indent=2))
    log.info("run %s (%s): %s on %s", run_dir, mode, options.system, ", ".join(m.name for m in plan.machines))
    try:
        if system.uses_global_stage:
            system.context.stage_printer = lambda text: stage(f"global stage: {text}")
            resolved["global_stage"] = _run_global_stage(system, plan, options, run_dir, stage)
            atomic_write_text(run_dir / "config.json", json.dumps(resolved, indent=2))
        _save_notes(run_dir, system)
        for k, machine in enumerate(plan.machines, start=1):
            prefix = f"machine {k}/{len(plan.machines)}: "
            if (run_dir / "machines" / machine.name / "done.json").exists():
                stage(f"{prefix}{machine.name}: finished in an earlier run, skipped")
                continue
            system.context.stage_printer = lambda text, prefix=f"{prefix}{machine.name}: ": stage(prefix + text)
            if system.distributed_stage == "machine":
                distributed.broadcast_object(machine.name)  # torchrun: the other ranks join this machine's training
            run_machine(system, machine, plan, options, run_dir, lambda text: stage(prefix + text))
            _save_notes(run_dir, system)
        if system.distributed_stage == "machine":
            distributed.broadcast_object(None)
        evaluation = evaluate_run(run_dir)
        write_report(run_dir)
    except BaseException as error:
        log.error("run failed: %s: %s", type(error).__name__, error)
        raise
    finally:
        _save_notes(run_dir, system)
    _print_notes(run_dir)
    log.info("run finished")
    return run_dir, evaluation


def _print_notes(run_dir: Path) -> None:
    """The run's caveats (the random-tiny BEATs warning...) on the console too, --quiet or not: they qualify the
    numbers printed next."""
    for note in read_notes(run_dir):
        print(f"asdx: note: {note}", file=sys.stderr, flush=True)


def _run_as_worker(options: RunOptions, config):
    """A torchrun rank other than 0: joins the global stage's training when rank 0 trains, writes nothing.

    Rank 0 alone checks the run folder, reuses a finished global stage or trains it with the
    others, and runs the per-machine stage; this rank returns (None, None) once its part is done.
    """
    system = make_system(options, config, progress=False, log=logging.getLogger("asdx.run.worker"))
    stage = system.distributed_stage
    if not system.uses_global_stage and stage != "machine":
        return None, None
    plan = _plan(options, system)
    system.prepare()
    run_dir = run_dir_for(options, config)
    quiet = dataclasses.replace(options, progress=False)
    # rank 0 broadcasts once per global stage; only systems whose fit_global runs DDP join it: any other
    # (sera) would train a duplicate model here and write it into rank 0's folder
    if system.uses_global_stage and distributed.broadcast_object(None)["train"] and stage == "global":
        train, validation = _global_sets(plan, quiet)
        system.fit_global(train, run_dir / GLOBAL_DIR, validation)
    if stage == "machine":  # rank 0 names each machine it trains, then None
        while (name := distributed.broadcast_object(None)) is not None:
            train = ClipSet(plan.train[name], plan.lengths[name, "train"], options.seconds, options.workers, False,
                            f"{name} train")
            system.fit_machine(name, train, run_dir / "machines" / name)
    return None, None


def _save_notes(run_dir: Path, system) -> None:
    notes = list(dict.fromkeys(system.context.notes))
    if notes != read_notes(run_dir):
        atomic_write_text(run_dir / "notes.json", json.dumps(notes, indent=2))


__all__ = ["DEFAULT_SECONDS", "RunOptions", "THRESHOLD_Q", "evaluate_run", "make_system", "read_notes", "run",
           "run_dir_for", "run_machine", "scores_csv"]
