"""The ground-truth CSVs of the official evaluator (nttcslab/dcase2023_task2_evaluator), read in one place.

<gt_dir>/ground_truth_{data,domain,attributes}/ground_truth_<machine>_section_<SS>_test.csv,
no header: `<name>,<0 normal|1 anomaly>`, `<name>,<0 source|1 target>`, and the optional
`<anonymised name>,<renamed name without .wav>`. asdx keeps them under
`<root>/eval_data/ground_truth`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asdx.submission import describe_name_difference, read_binary_csv

GROUND_TRUTH_KINDS = ("data", "domain", "attributes")
_GROUND_TRUTH_FILE = re.compile(r"ground_truth_(?P<machine>.+)_section_00_test\.csv")


def ground_truth_dir(root: str | Path) -> Path:
    """Where asdx keeps the evaluator ground truth: ``<root>/eval_data/ground_truth``."""
    return Path(root) / "eval_data" / "ground_truth"


def ground_truth_file(gt_dir: str | Path, kind: str, machine: str, section: str = "00") -> Path:
    """``<gt_dir>/ground_truth_<kind>/ground_truth_<machine>_section_<SS>_test.csv`` (official evaluator layout)."""
    if kind not in GROUND_TRUTH_KINDS:
        raise ValueError(f"kind: expected one of {GROUND_TRUTH_KINDS}, got {kind!r}.")
    return Path(gt_dir) / f"ground_truth_{kind}" / f"ground_truth_{machine}_section_{section}_test.csv"


@dataclass(frozen=True)
class MachineTruth:
    """Ground truth of one machine type's test section 00, sorted by clip name."""

    names: tuple[str, ...]
    labels: np.ndarray             # int8, 1 = anomaly
    domains: np.ndarray            # int8, 1 = target
    renamed: dict[str, str] = field(default_factory=dict)  # renamed wav name -> clip name
    origin: str = ""               # where it was read, for messages


def load_ground_truth(directory) -> dict[str, MachineTruth]:
    """Reads evaluator-format ground truth: one machine per `ground_truth_data/ground_truth_<m>_section_00_test.csv`.

    Each machine also needs the `ground_truth_domain/` file with the same names;
    `ground_truth_attributes/` (anonymised name -> renamed name without `.wav`)
    is optional and lets submissions use the renamed names.
    """
    directory = Path(directory)
    data_dir = directory / "ground_truth_data"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not found (expected the evaluator's ground_truth_data/ folder).")
    machines = sorted(m.group("machine") for m in (_GROUND_TRUTH_FILE.fullmatch(p.name) for p in data_dir.iterdir())
                      if m)
    if not machines:
        raise ValueError(f"{data_dir}: no ground_truth_<machine>_section_00_test.csv files.")
    return {machine: load_machine_truth(directory, machine) for machine in machines}


def load_machine_truth(directory, machine: str, section: str = "00") -> MachineTruth:
    """One machine's ground truth; the data and domain files must list the same names."""
    directory = Path(directory)
    data_path = ground_truth_file(directory, "data", machine, section)
    domain_path = ground_truth_file(directory, "domain", machine, section)
    labels = read_binary_csv(data_path, "label").as_dict()
    domains = read_binary_csv(domain_path, "domain").as_dict()
    if labels.keys() != domains.keys():
        raise ValueError(f"{domain_path}: clip names differ from {data_path.name}: "
                         + describe_name_difference(sorted(labels.keys() - domains.keys()),
                                                sorted(domains.keys() - labels.keys())))
    renamed = {}
    attributes_path = ground_truth_file(directory, "attributes", machine, section)
    if attributes_path.is_file():
        renamed = _read_attributes(attributes_path, labels.keys())
    names = tuple(sorted(labels))
    return MachineTruth(names, np.array([labels[n] for n in names], dtype=np.int8),
                        np.array([domains[n] for n in names], dtype=np.int8), renamed, str(directory))


def _read_attributes(path: Path, known: set[str]) -> dict[str, str]:
    """`<anonymised name>,<renamed name without .wav>` rows -> {renamed name + '.wav': anonymised name}."""
    mapping: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if len(row) != 2 or not row[0] or not row[1]:
                raise ValueError(f"{where}: expected '<anonymised name>,<renamed name>', got {row!r}.")
            anonymised, renamed = row[0], f"{row[1]}.wav"
            if anonymised not in known:
                raise ValueError(f"{where}: {anonymised!r} is not in the ground_truth_data file.")
            if renamed in mapping:
                raise ValueError(f"{where}: renamed name {renamed!r} appears twice.")
            mapping[renamed] = anonymised
    return mapping
