"""DCASE Task 2 submission files: write and read the evaluator's per-machine CSVs.

Format (the official evaluator, nttcslab/dcase2023_task2_evaluator): for each machine type, in one
folder, `anomaly_score_<machine>_section_00_test.csv` (`<wav name>,<score>`)
and `decision_result_<machine>_section_00_test.csv` (`<wav name>,<0|1>`), no
header (the evaluator parses every row as a number). Files are written
atomically; reading checks every row and names the file and line of a fault.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdx._arrays import prepare, prepare_binary
from asdx._atomic import atomic_write_text

SECTION = "00"
_MACHINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SCORE_FILE = re.compile(r"anomaly_score_(?P<machine>.+)_section_00_test\.csv")


def score_file_name(machine: str) -> str:
    return f"anomaly_score_{_check_machine(machine)}_section_{SECTION}_test.csv"


def decision_file_name(machine: str) -> str:
    return f"decision_result_{_check_machine(machine)}_section_{SECTION}_test.csv"


def _check_machine(machine: str) -> str:
    if not isinstance(machine, str) or not _MACHINE.fullmatch(machine):
        raise ValueError(f"machine: {machine!r} is not a machine type name (letters, digits, '.', '_', '-').")
    return machine


def _name_problem(name) -> str | None:
    """Why `name` cannot be a clip name in a headerless two-column CSV, or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if name != name.strip():
        return "has leading or trailing whitespace"
    if any(c in name for c in ',"') or not name.isprintable():
        return "contains a comma, a quote or a non-printable character"
    return None


def _check_names(names) -> list[str]:
    if isinstance(names, str):
        raise ValueError("names: must be a sequence of clip names, not one string.")
    names = list(names)
    seen: set[str] = set()
    for i, name in enumerate(names):
        problem = _name_problem(name)
        if problem:
            raise ValueError(f"names[{i}]: {name!r} {problem}.")
        if name in seen:
            raise ValueError(f"names[{i}]: {name!r} is duplicated.")
        seen.add(name)
    return names


def _write(path: Path, names: list[str], values: list[str]) -> Path:
    return atomic_write_text(path, "".join(f"{n},{v}\n" for n, v in zip(names, values)))


def _prepared_scores(names, scores) -> tuple[list[str], list[str]]:
    names = _check_names(names)
    s = prepare(scores, "scores", ndim=1, dtype=np.float64).numpy()
    if s.shape[0] != len(names):
        raise ValueError(f"scores: length {s.shape[0]} does not match the {len(names)} names.")
    return names, [repr(float(v)) for v in s]


def _prepared_decisions(names, decisions) -> tuple[list[str], list[str]]:
    names = _check_names(names)
    d = prepare_binary(decisions, "decisions")
    if d.shape[0] != len(names):
        raise ValueError(f"decisions: length {d.shape[0]} does not match the {len(names)} names.")
    return names, [str(int(v)) for v in d]


def write_scores(directory, machine: str, names, scores) -> Path:
    """Writes `anomaly_score_<machine>_section_00_test.csv` (full float repr, as the baseline does)."""
    names, values = _prepared_scores(names, scores)
    return _write(Path(directory) / score_file_name(machine), names, values)


def write_decisions(directory, machine: str, names, decisions) -> Path:
    """Writes `decision_result_<machine>_section_00_test.csv` (1 = anomaly)."""
    names, values = _prepared_decisions(names, decisions)
    return _write(Path(directory) / decision_file_name(machine), names, values)


def write_submission(directory, machine: str, names, scores, decisions) -> tuple[Path, Path]:
    """Writes both files of one machine (creating `directory`); everything is validated before
    either file is touched."""
    names_s, score_values = _prepared_scores(names, scores)
    names_d, decision_values = _prepared_decisions(names_s, decisions)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return (_write(directory / score_file_name(machine), names_s, score_values),
            _write(directory / decision_file_name(machine), names_d, decision_values))


@dataclass(frozen=True)
class SubmissionFile:
    """The rows of one submission CSV, in file order."""

    path: Path
    names: tuple[str, ...]
    values: np.ndarray  # float64 scores or int8 decisions

    def as_dict(self) -> dict[str, float | int]:
        return dict(zip(self.names, self.values.tolist()))


def _read(path, kind: str, binary: bool) -> SubmissionFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {kind} file not found.")
    names: list[str] = []
    values: list[float] = []
    first_line: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                if len(row) != 2:
                    raise ValueError(f"{where}: expected 2 fields '<name>,<value>', got {len(row)} ({row!r}).")
                name, text = row
                problem = _name_problem(name)
                if problem:
                    raise ValueError(f"{where}: the clip name {name!r} {problem}.")
                if name in first_line:
                    raise ValueError(f"{where}: duplicate clip name {name!r} (first on line {first_line[name]}).")
                values.append(_parse_value(text, kind, binary, where))
                first_line[name] = reader.line_num
                names.append(name)
        except csv.Error as error:
            raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({error}).") from error
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error}).") from error
    if not names:
        raise ValueError(f"{path}: has no rows.")
    dtype = np.int8 if binary else np.float64
    return SubmissionFile(path, tuple(names), np.asarray(values, dtype=dtype))


def _parse_value(text: str, kind: str, binary: bool, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        header_hint = " (the file must have no header)" if _looks_like_header(text) else ""
        raise ValueError(f"{where}: the {kind} {text!r} is not a number{header_hint}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: the {kind} {text!r} is not finite.")
    if binary and value not in (0.0, 1.0):
        raise ValueError(f"{where}: the {kind} {text!r} is not 0 or 1.")
    return value


def _looks_like_header(text: str) -> bool:
    return any(c.isalpha() for c in text) and text.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def read_scores(path) -> SubmissionFile:
    """Reads an anomaly-score CSV; ValueError naming file and line for a malformed row,
    a duplicate name or a non-finite score."""
    return _read(path, "score", binary=False)


def read_decisions(path) -> SubmissionFile:
    """Reads a decision CSV; every value must be 0 or 1 (written as e.g. `1` or `1.0`)."""
    return _read(path, "decision", binary=True)


def read_binary_csv(path, what: str) -> SubmissionFile:
    """Reads any headerless `<name>,<0|1>` CSV (e.g. the evaluator's ground truth); `what` names the value in errors."""
    return _read(path, what, binary=True)


def submission_machines(directory) -> list[str]:
    """Machine types that have an anomaly-score file in `directory`, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: submission folder not found.")
    found = (_SCORE_FILE.fullmatch(p.name) for p in directory.iterdir() if p.is_file())
    return sorted(m.group("machine") for m in found if m)


SHOWN_NAMES = 20


def describe_name_difference(missing: list[str], extra: list[str]) -> str:
    """"3 missing: a, b, c; 1 extra: d", at most SHOWN_NAMES names per list."""

    def shown(names: list[str]) -> str:
        more = f", … (+{len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else ""
        return ", ".join(names[:SHOWN_NAMES]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {shown(missing)}")
    if extra:
        parts.append(f"{len(extra)} extra: {shown(extra)}")
    return "; ".join(parts)
