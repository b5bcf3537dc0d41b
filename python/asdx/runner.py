"""`asdx run`: check everything, run a system's global and per-machine stages, threshold, write, evaluate.

The options are asdx.options.RunOptions; the run directory runs/<system>/<name>/ and its files are
asdx.rundir's. Everything that can be checked is checked before the first folder is made: the config, the
device, the machines, every selected clip's WAV header (and the samples of float WAVs, which can hold NaN).
A failure is written to run.log; rerunning a run that finished no machine starts it afresh, a run with
finished machines needs --resume, and --resume with another config is refused naming the keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
from asdx.data import machine_clips, resolve_machines
from asdx.data.dataset import MachineDir, list_machines, split_dir
from asdx.data.loader import ClipSet, check_headers
from asdx.evaluation import evaluate, result_csv_text, result_json
from asdx.kernels import fallback_notes
from asdx.options import RunOptions
from asdx.rundir import GLOBAL, RunDir, run_config
from asdx.scoring.gamma import GammaFitWarning
from asdx.scoring.threshold import GammaThreshold
from asdx.submission import write_submission
from asdx.systems import SYSTEMS, make_system
from asdx.systems.base import MachineScores, SystemContext


@dataclass
class _Plan:
    """Everything run() checked before making a folder."""

    machines: list[MachineDir]
    train: dict[str, list]
    test: dict[str, list]
    lengths: dict[tuple[str, str], np.ndarray]
    global_machines: list[MachineDir] = field(default_factory=list)
    validation: dict[str, list] = field(default_factory=dict)  # labelled test clips of global machines


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


def _prepare_run_dir(run_dir: RunDir, options: RunOptions, resolved: dict) -> str:
    """Decides how an existing run directory is used: 'new', 'restart' (it finished nothing and --resume was not
    given: partial outputs go) or 'resume' (same config; finished machines and checkpoints are kept)."""
    if not run_dir.config_file.exists():
        return "new"
    if not run_dir.finished() and not options.resume:
        return "restart"
    if not options.resume:
        raise FileExistsError(f"{run_dir.path}: a run with this name has finished machines; pass --resume to "
                              "continue it or --name for a new one.")
    differing = run_dir.config_differences(resolved)
    if differing:
        raise ValueError(f"{run_dir.path}: --resume with a different config than the stored one; differing keys: "
                         f"{', '.join(differing)}. Use --name for a new run.")
    return "resume"


# ---------------------------------------------------------------------- logging and progress
def _logger(run_dir: RunDir) -> logging.Logger:
    log = logging.getLogger(f"asdx.run.{run_dir.path.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    _close_logger(log)
    handler = logging.FileHandler(run_dir.log_file)
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


# ---------------------------------------------------------------------- scores
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


def _run_global_stage(system, plan: _Plan, options: RunOptions, run_dir: RunDir, stage: _Stages) -> dict:
    train, validation = _global_sets(plan, options)
    key = _global_key(options, system, train.clips, train.lengths, validation)
    folder = run_dir.global_dir
    info = {"key": key, "machines": [m.name for m in plan.global_machines], "clips": len(train),
            "validation_clips": 0 if validation is None else len(validation)}
    if run_dir.global_key() == key:
        distributed.broadcast_object({"train": False})
        stage(f"global stage: finished earlier in this run (key {key[:12]}), loaded")
        system.load_global(folder)
        return {**info, "reused_from": str(folder)}
    for other in sorted(Path(options.out, options.system).glob(f"*/{GLOBAL}")):
        if other != folder and RunDir(other.parent).global_key() == key:
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
    run_dir.finish_global(info)
    system.load_global(folder)  # the per-machine stage always starts from what is on disk
    return {**info, "reused_from": None}


# ---------------------------------------------------------------------- one machine
def run_machine(system, machine: MachineDir, plan: _Plan, options: RunOptions, run_dir: RunDir, stage) -> None:
    machine_dir = run_dir.machine_dir(machine.name)
    machine_dir.mkdir(exist_ok=True)
    train_clips, test_clips = plan.train[machine.name], plan.test[machine.name]
    stage(f"{machine.name}: {len(train_clips)} train clips, {len(test_clips)} test clips")
    train = ClipSet(train_clips, plan.lengths[machine.name, "train"], options.seconds, options.workers,
                    options.progress, f"{machine.name} train")
    train_scores = _check_scores(system.fit_machine(machine.name, train, machine_dir), len(train_clips),
                                 f"{machine.name} train scores")
    run_dir.write_scores(machine.name, "train", [c.name for c in train_clips], train_scores)
    # fitted on the honest scores: MachineScores.threshold_scores when the system gives them (e.g. held-out clips)
    with warnings.catch_warnings():  # a fallback is a run note (below), not a warning amid the progress lines
        warnings.simplefilter("ignore", GammaFitWarning)
        threshold = GammaThreshold(q=options.threshold_q).fit(train_scores.for_threshold())
    if threshold.fallback_reason_ is not None:
        system.context.note(f"{machine.name}: gamma threshold by {threshold.method_}: {threshold.fallback_reason_}")
    run_dir.write_threshold(machine.name, threshold.to_dict())
    stage(f"{machine.name}: scoring")
    test = ClipSet(test_clips, plan.lengths[machine.name, "test"], options.seconds, options.workers,
                   options.progress, f"{machine.name} test")
    test_scores = _check_scores(system.score_machine(test), len(test_clips), f"{machine.name} test scores")
    decisions = threshold.decide(test_scores.scores)
    names = [clip.name for clip in test_clips]
    run_dir.write_scores(machine.name, "test", names, test_scores, [c.label for c in test_clips],
                         [c.domain for c in test_clips])   # their label and domain: the run's ground truth
    write_submission(run_dir.submission_dir, machine.name, names, test_scores.scores, decisions)
    if train_scores.threshold_scores is not None:  # what the report plots under the fitted gamma
        run_dir.write_threshold_scores(machine.name, train_scores.threshold_scores)
    run_dir.finish_machine(machine.name, threshold.threshold_)
    stage(f"{machine.name}: done (threshold {threshold.threshold_:.6g}, {int(decisions.sum())} of {len(decisions)} "
          "test clips flagged)")


# ---------------------------------------------------------------------- evaluation
def evaluate_run(run_dir):
    """Official metrics of the finished machines that have ground truth (written to metrics.json and
    metrics.csv); None if there are none. run_dir: a RunDir or its path."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    truth = run_dir.ground_truth()
    if not truth:
        return None
    evaluation = evaluate(run_dir.submission_dir, truth, machines=sorted(truth))
    metrics = result_json(evaluation)
    metrics["notes"] = run_dir.read_notes()
    run_dir.write_metrics(metrics, result_csv_text(evaluation))
    return evaluation


# ---------------------------------------------------------------------- the run
def _system(options: RunOptions, config, progress: bool | None = None, log: logging.Logger | None = None):
    """The system of options.system with the runner's context; the context resolves the config's device."""
    context = SystemContext(device=getattr(config, "device", "cpu"),
                            progress=options.progress if progress is None else progress, workers=options.workers,
                            cache_dir=options.cache, log=log or logging.getLogger("asdx.system"),
                            notes=list(options.notes))
    return make_system(options.system, config, context)


def run(options: RunOptions, config):
    """Runs options.system on the selected machines; returns (run directory path, evaluation or None)."""
    if options.system not in SYSTEMS:
        raise ValueError(f"system: unknown {options.system!r}; available: {', '.join(sorted(SYSTEMS))}.")
    me = distributed.init_from_environment(getattr(config, "device", "auto"))
    if not me.is_main:
        return _run_as_worker(options, config)
    system = _system(options, config)
    plan = _plan(options, system)
    _check_cache_dir(options.cache)
    system.prepare()
    run_dir = RunDir.for_run(options, config)
    resolved = run_config(options, config)
    mode = _prepare_run_dir(run_dir, options, resolved)

    run_dir.machines_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(run_dir)
    try:
        return _run_logged(options, system, plan, run_dir, resolved, mode, log)
    finally:
        _close_logger(log)  # also on failure: run.log is closed when run() returns or raises


def _run_logged(options: RunOptions, system, plan: _Plan, run_dir: RunDir, resolved: dict, mode: str,
                log: logging.Logger):
    """The body of run() once run.log is open; run() closes it."""
    import asdx
    from asdx.report import write_report

    system.context.log = log
    for note in system.context.notes:  # noted while preparing, before the log existed
        log.info("note: %s", note)
    stage = _Stages(log, options.progress)
    if mode == "restart":
        run_dir.clear_unfinished()
        run_dir.machines_dir.mkdir(exist_ok=True)
        log.info("rerun of a run that finished no machine: starting afresh")
    run_dir.submission_dir.mkdir(exist_ok=True)
    resolved.update(machines=[m.name for m in plan.machines], data=str(Path(options.data).resolve()),
                    notes=list(options.notes))
    run_dir.write_config(resolved)
    run_dir.write_environment(asdx.info())
    log.info("run %s (%s): %s on %s", run_dir.path, mode, options.system, ", ".join(m.name for m in plan.machines))
    try:
        if system.uses_global_stage:
            system.context.stage_printer = lambda text: stage(f"global stage: {text}")
            resolved["global_stage"] = _run_global_stage(system, plan, options, run_dir, stage)
            run_dir.write_config(resolved)
        _save_notes(run_dir, system)
        for k, machine in enumerate(plan.machines, start=1):
            prefix = f"machine {k}/{len(plan.machines)}: "
            if run_dir.is_finished(machine.name):
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
        write_report(run_dir.path)
    except BaseException as error:
        log.error("run failed: %s: %s", type(error).__name__, error)
        raise
    finally:
        _save_notes(run_dir, system)
    _print_notes(run_dir)
    log.info("run finished")
    return run_dir.path, evaluation


def _save_notes(run_dir: RunDir, system) -> None:
    """The system's notes and the kernel fallbacks of this process (asdx.kernels: native CUDA kernels that could
    not run, each said once) into the run folder."""
    for note in fallback_notes():
        system.context.note(note)
    run_dir.save_notes(system.context.notes)


def _print_notes(run_dir: RunDir) -> None:
    """The run's caveats (the random-tiny BEATs warning...) on the console too, --quiet or not: they qualify the
    numbers printed next."""
    for note in run_dir.read_notes():
        print(f"asdx: note: {note}", file=sys.stderr, flush=True)


def _run_as_worker(options: RunOptions, config):
    """A torchrun rank other than 0: joins the global stage's training when rank 0 trains, writes nothing.

    Rank 0 alone checks the run folder, reuses a finished global stage or trains it with the
    others, and runs the per-machine stage; this rank returns (None, None) once its part is done.
    """
    system = _system(options, config, progress=False, log=logging.getLogger("asdx.run.worker"))
    stage = system.distributed_stage
    if not system.uses_global_stage and stage != "machine":
        return None, None
    plan = _plan(options, system)
    system.prepare()
    run_dir = RunDir.for_run(options, config)
    quiet = dataclasses.replace(options, progress=False)
    # rank 0 broadcasts once per global stage; only systems whose fit_global runs DDP join it: any other
    # (sera) would train a duplicate model here and write it into rank 0's folder
    if system.uses_global_stage and distributed.broadcast_object(None)["train"] and stage == "global":
        train, validation = _global_sets(plan, quiet)
        system.fit_global(train, run_dir.global_dir, validation)
    if stage == "machine":  # rank 0 names each machine it trains, then None
        while (name := distributed.broadcast_object(None)) is not None:
            train = ClipSet(plan.train[name], plan.lengths[name, "train"], options.seconds, options.workers, False,
                            f"{name} train")
            system.fit_machine(name, train, run_dir.machine_dir(name))
    return None, None


__all__ = ["RunOptions", "evaluate_run", "run", "run_machine"]
