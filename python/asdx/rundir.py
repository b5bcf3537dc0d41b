"""The run directory runs/<system>/<name>/: the one place that names its files and reads and writes them.

asdx.runner writes it; asdx.seeds, asdx.compare, asdx.detector and asdx.report read it, all through RunDir.
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
  machines/<machine>/test_scores.csv    name,score,<sub-scores...>,label,domain (blank where unknown); its label
                                        and domain columns are the run's ground truth (RunDir.ground_truth)
  machines/<machine>/done.json          written last: the machine is finished
  submission/anomaly_score_<m>_section_00_test.csv, decision_result_<m>_section_00_test.csv
  metrics.json, metrics.csv             official metrics of the machines with ground truth
  report.html, report/<machine>.png
Every file is written atomically (asdx._atomic). Light: neither torch nor the systems are imported.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np

from asdx._atomic import atomic_write_text

CONFIG, ENVIRONMENT, LOG, NOTES = "config.json", "environment.json", "run.log", "notes.json"
METRICS_JSON, METRICS_CSV, REPORT_HTML, REPORT_DIR = "metrics.json", "metrics.csv", "report.html", "report"
GLOBAL, MACHINES, SUBMISSION = "global", "machines", "submission"
DONE, THRESHOLD, THRESHOLD_SCORES = "done.json", "threshold.json", "threshold_scores.csv"
SPLITS = ("train", "test")          # machines/<machine>/<split>_scores.csv
TRUTH_COLUMNS = ("label", "domain")
COMPARED_KEYS = ("system", "seconds", "threshold_q")   # with "config": what --resume must find unchanged


# ---------------------------------------------------------------------- the config a run records
def run_config(options, config) -> dict:
    """What config.json records of a run before it starts: the system, its config and the run options that
    change its results (asdx.options.RunOptions). The runner adds the machines, the data root and the notes."""
    return {"system": options.system, "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
            "seconds": float(options.seconds), "threshold_q": float(options.threshold_q)}


def differing_keys(stored: dict, wanted: dict) -> list[str]:
    """`key (stored -> wanted)` for every config key and compared run option that differs."""
    keys = []
    for key in sorted(set(stored) | set(wanted)):
        if key == "config":
            inner_stored, inner_wanted = stored.get("config", {}), wanted.get("config", {})
            keys += [f"{k} ({inner_stored.get(k)!r} -> {inner_wanted.get(k)!r})"
                     for k in sorted(set(inner_stored) | set(inner_wanted))
                     if inner_stored.get(k) != inner_wanted.get(k)]
        elif key in COMPARED_KEYS and stored.get(key) != wanted.get(key):
            keys.append(f"{key} ({stored.get(key)!r} -> {wanted.get(key)!r})")
    return keys


def is_run_dir(path) -> bool:
    path = Path(path)
    return (path / CONFIG).is_file() or (path / MACHINES).is_dir()


# ---------------------------------------------------------------------- score files
def scores_csv_text(names, scores, labels=None, domains=None) -> str:
    """name,score,<sub-scores>[,label,domain] rows of an asdx.systems.base.MachineScores (label 1 = anomaly,
    blank where unknown); floats as repr, so that they read back exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = scores.columns()
    with_truth = labels is not None
    writer.writerow(["name", *columns, *(TRUTH_COLUMNS if with_truth else [])])
    for i, name in enumerate(names):
        row = [name, *(repr(float(values[i])) for values in columns.values())]
        if with_truth:
            row.append("" if labels[i] is None else int(labels[i] == "anomaly"))
            row.append("" if domains[i] is None else domains[i])
        writer.writerow(row)
    return buffer.getvalue()


def read_scores_csv(path) -> dict[str, np.ndarray]:
    """name,score,<sub-scores...>[,label,domain] rows -> columns (label -1 and domain "" where unknown).

    The sub-score column names are in the result's "sub_scores" entry, in file order.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        header = reader.fieldnames or []
    sub_names = [c for c in header if c not in ("name", "score", *TRUTH_COLUMNS)]
    out = {"name": np.array([row["name"] for row in rows]),
           "score": np.array([float(row["score"]) for row in rows]),
           "label": np.array([int(row["label"]) if row.get("label") not in (None, "") else -1 for row in rows],
                             dtype=int),
           "domain": np.array([row.get("domain") or "" for row in rows])}
    for name in sub_names:
        out[name] = np.array([float(row[name]) if row[name] != "" else np.nan for row in rows])
    out["sub_scores"] = sub_names
    return out


def _read_json(path: Path, hint: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; {hint}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable ({error}); {hint}") from error


class RunDir:
    """One run directory (see the module docstring for its layout). Nothing is created until a write."""

    def __init__(self, path):
        self.path = Path(path)
        self.config_file = self.path / CONFIG
        self.environment_file = self.path / ENVIRONMENT
        self.log_file = self.path / LOG
        self.notes_file = self.path / NOTES
        self.metrics_json = self.path / METRICS_JSON
        self.metrics_csv = self.path / METRICS_CSV
        self.report_html = self.path / REPORT_HTML
        self.report_dir = self.path / REPORT_DIR
        self.global_dir = self.path / GLOBAL
        self.machines_dir = self.path / MACHINES
        self.submission_dir = self.path / SUBMISSION

    @classmethod
    def for_run(cls, options, config) -> "RunDir":
        """<out>/<system>/<name>; the name defaults to <machines>-seed<seed> (machines joined by +)."""
        name = options.name or f"{options.machines.replace(',', '+')}-seed{config.seed}"
        return cls(Path(options.out) / options.system / name)

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ run-level files
    def read_config(self) -> dict:
        """config.json, or {} when the run has none yet."""
        if not self.config_file.exists():
            return {}
        return _read_json(self.config_file, "the run directory is incomplete.")

    def write_config(self, resolved: dict) -> None:
        atomic_write_text(self.config_file, json.dumps(resolved, indent=2))

    def config_differences(self, wanted: dict) -> list[str]:
        """differing_keys between the stored config.json and `wanted` (run_config of the run to come)."""
        return differing_keys(self.read_config(), wanted)

    def read_environment(self) -> dict:
        return _read_json(self.environment_file, "the run directory is incomplete.")

    def write_environment(self, environment: dict) -> None:
        atomic_write_text(self.environment_file, json.dumps(environment, indent=2))

    def read_notes(self) -> list[str]:
        return json.loads(self.notes_file.read_text()) if self.notes_file.exists() else []

    def save_notes(self, notes) -> None:
        """notes.json holds the notes once each, in order; rewritten only when they changed."""
        notes = list(dict.fromkeys(notes))
        if notes != self.read_notes():
            atomic_write_text(self.notes_file, json.dumps(notes, indent=2))

    def write_metrics(self, metrics: dict, csv_text: str) -> None:
        atomic_write_text(self.metrics_json, json.dumps(metrics, indent=2))
        atomic_write_text(self.metrics_csv, csv_text)

    def read_metrics(self) -> dict | None:
        return json.loads(self.metrics_json.read_text()) if self.metrics_json.exists() else None

    def clear_unfinished(self) -> None:
        """A restart of a run that finished no machine: its partial outputs go, the global stage stays (keyed)."""
        for folder in (self.machines_dir, self.submission_dir, self.report_dir):
            if folder.exists():
                shutil.rmtree(folder)
        for path in (self.metrics_json, self.metrics_csv, self.report_html, self.notes_file):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the global stage
    def global_key(self) -> str | None:
        """The key of a finished global stage (global/done.json), None when there is none."""
        try:
            return json.loads((self.global_dir / DONE).read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            return None

    def finish_global(self, info: dict) -> None:
        atomic_write_text(self.global_dir / DONE, json.dumps(info, indent=2))

    # ------------------------------------------------------------------ machines
    def machine_dir(self, machine: str) -> Path:
        return self.machines_dir / machine

    def finished(self) -> list[str]:
        """The machines with done.json, sorted by name."""
        return sorted(p.parent.name for p in self.machines_dir.glob(f"*/{DONE}"))

    def is_finished(self, machine: str) -> bool:
        return (self.machine_dir(machine) / DONE).is_file()

    def finished_at(self, machine: str) -> float:
        """When the machine finished: its done.json's modification time (seconds since the epoch)."""
        return (self.machine_dir(machine) / DONE).stat().st_mtime

    def finish_machine(self, machine: str, threshold: float) -> None:
        """done.json, written last: the machine's files are complete."""
        atomic_write_text(self.machine_dir(machine) / DONE, json.dumps({"machine": machine, "threshold": threshold}))

    def scores_file(self, machine: str, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}.")
        return self.machine_dir(machine) / f"{split}_scores.csv"

    def write_scores(self, machine: str, split: str, names, scores, labels=None, domains=None) -> None:
        atomic_write_text(self.scores_file(machine, split), scores_csv_text(names, scores, labels, domains))

    def read_scores(self, machine: str, split: str) -> dict[str, np.ndarray]:
        return read_scores_csv(self.scores_file(machine, split))

    def write_threshold(self, machine: str, threshold: dict) -> None:
        atomic_write_text(self.machine_dir(machine) / THRESHOLD, json.dumps(threshold, indent=2))

    def read_threshold(self, machine: str) -> dict:
        """threshold.json (asdx.scoring.threshold.GammaThreshold.to_dict)."""
        return _read_json(self.machine_dir(machine) / THRESHOLD, "rerun the machine.")

    def write_threshold_scores(self, machine: str, scores) -> None:
        atomic_write_text(self.machine_dir(machine) / THRESHOLD_SCORES,
                          "score\n" + "".join(f"{float(s)!r}\n" for s in scores))

    def read_threshold_scores(self, machine: str) -> np.ndarray | None:
        """threshold_scores.csv, None when the system gave none (the gamma saw the train_scores.csv scores)."""
        path = self.machine_dir(machine) / THRESHOLD_SCORES
        if not path.exists():
            return None
        with open(path, newline="") as handle:
            return np.array([float(row["score"]) for row in csv.DictReader(handle)])

    def decisions(self, machine: str) -> np.ndarray:
        """The machine's submitted decisions (1 = anomaly), in the file's order."""
        from asdx.submission import decision_file_name, read_decisions

        return read_decisions(self.submission_dir / decision_file_name(machine)).values

    def ground_truth(self) -> dict:
        """{machine: asdx.data.MachineTruth} of the finished machines whose every test clip has a known label
        and domain (the label and domain columns of test_scores.csv), clips sorted by name."""
        from asdx.data.ground_truth import MachineTruth   # asdx.data loads torch: only when needed

        truth = {}
        for machine in self.finished():
            test = self.read_scores(machine, "test")
            if not len(test["name"]) or (test["label"] < 0).any() or (test["domain"] == "").any():
                continue
            order = np.argsort(test["name"], kind="stable")
            truth[machine] = MachineTruth(names=tuple(test["name"][order].tolist()),
                                          labels=test["label"][order].astype(np.int8),
                                          domains=(test["domain"][order] == "target").astype(np.int8),
                                          origin=str(self.scores_file(machine, "test")))
        return truth


__all__ = ["RunDir", "differing_keys", "is_run_dir", "read_scores_csv", "run_config", "scores_csv_text"]
