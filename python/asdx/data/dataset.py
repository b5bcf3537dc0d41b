"""Discovery of DCASE data on disk and one typed record per clip.

Layout (the official baseline, nttcslab/dcase2023_task2_baseline_ae, and evaluator,
nttcslab/dcase2023_task2_evaluator)::

    <root>/dev_data/raw/<machine>/{train,test}/*.wav, attributes_00.csv
    <root>/eval_data/raw/<machine>/{train,test}/*.wav, attributes_00.csv
    <root>/eval_data/raw/<machine>/test_rename/*.wav      optional; read instead of test/
    <root>/eval_data/ground_truth/ground_truth_{data,domain,attributes}/
           ground_truth_<machine>_section_<SS>_test.csv   evaluator ground truth (asdx's place)

The official evaluator keeps its ground-truth folders in its own repository; asdx
keeps them with the data, under ``eval_data/ground_truth/``, so that one root holds
everything ``asdx evaluate --data ROOT`` needs. Eval test clips get their domain,
label and attributes from those files when present, and stay unlabelled otherwise.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from asdx.data.machines import DATASETS, MachineType, canonical_name, machine_type
from asdx.data.ground_truth import ground_truth_dir, ground_truth_file, load_machine_truth
from asdx.data.names import parse_name

SYNTH_HINT = "create a synthetic stand-in with `asdx synth --out DIR`"


@dataclass(frozen=True)
class MachineDir:
    """A machine folder found on disk: canonical name, dataset and path."""

    name: str
    dataset: str
    path: Path
    folder: str  # the folder name as found on disk (may be an alias such as ToyCar_r2)

    @property
    def registered(self) -> MachineType | None:
        return machine_type(self.name)


@dataclass(frozen=True)
class Clip:
    """One clip on disk and everything known about it.

    domain/label/attributes are None/{} where unknown (anonymised eval test clips
    without ground truth). ``reference_name`` is the labelled (renamed) name of an
    anonymised eval clip when the ground truth gives it.
    """

    path: Path
    machine: str
    dataset: str
    split: str
    section: str
    index: int
    domain: str | None
    label: str | None
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)
    hidden_attributes: bool = False
    reference_name: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_anomaly(self) -> bool | None:
        return None if self.label is None else self.label == "anomaly"


def raw_dir(root: str | Path, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected 'dev' or 'eval', got {dataset!r}.")
    return Path(root) / f"{dataset}_data" / "raw"


def list_machines(root: str | Path) -> list[MachineDir]:
    """Machine folders under ``<root>/{dev,eval}_data/raw``, dev first, each sorted by name.

    Raises FileNotFoundError (with the fix) when the root holds neither.
    """
    root = Path(root)
    found: list[MachineDir] = []
    for dataset in DATASETS:
        base = raw_dir(root, dataset)
        if base.is_dir():
            for path in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found.append(MachineDir(canonical_name(path.name), dataset, path, path.name))
    if not found:
        raise FileNotFoundError(
            f"no DCASE data under {str(root)!r}: expected {root}/dev_data/raw/<machine>/ or "
            f"{root}/eval_data/raw/<machine>/; {SYNTH_HINT}."
        )
    return found


def resolve_machines(root: str | Path, spec: str | Iterable[str] | None = "all") -> list[MachineDir]:
    """Machines on disk selected by "dev", "eval", "all" or names/aliases (case-insensitive).

    spec: one string (comma-separated allowed) or a list. A name that is not on disk
    raises ValueError listing what was found.
    """
    present = list_machines(root)
    items = ["all"] if spec is None else ([s for s in spec.split(",")] if isinstance(spec, str) else list(spec))
    items = [str(s).strip() for s in items if str(s).strip()]
    if not items:
        raise ValueError("machines: empty selection.")
    chosen: list[MachineDir] = []
    for item in items:
        key = item.lower()
        if key == "all":
            group = present
        elif key in DATASETS:
            group = [m for m in present if m.dataset == key]
            if not group:
                raise ValueError(f"machines: no {key} machines under {str(root)!r}; found: {_found(present)}.")
        else:
            wanted = canonical_name(item).lower()
            group = [m for m in present if m.name.lower() == wanted or m.folder.lower() == key]
            if not group:
                raise ValueError(f"machines: {item!r} is not under {str(root)!r}; found: {_found(present)}.")
        chosen.extend(m for m in group if m not in chosen)
    return chosen


def _found(present: list[MachineDir]) -> str:
    return ", ".join(f"{m.folder} ({m.dataset})" for m in present)


def split_dir(machine: MachineDir, split: str) -> Path:
    """The folder of a split; for test, ``test_rename/`` wins over ``test/`` (official loader)."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}.")
    if split == "test" and (machine.path / "test_rename").is_dir():
        return machine.path / "test_rename"
    return machine.path / split


def machine_clips(machine: MachineDir, split: str, ground_truth: str | Path | None = None) -> list[Clip]:
    """Records of one machine's split, sorted by file name.

    ground_truth: folder holding ``ground_truth_<kind>/`` (default: the root's
    ``eval_data/ground_truth``); used for anonymised eval test names only.
    Raises FileNotFoundError for a missing split folder and ValueError naming the
    file for a name that does not parse or contradicts its folder.
    """
    folder = split_dir(machine, split)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing {split} folder of {machine.folder}; {SYNTH_HINT}.")
    if ground_truth is None:
        ground_truth = ground_truth_dir(machine.path.parents[2])
    truth_cache: dict[str, dict[str, tuple[str, str, str | None]]] = {}
    listed = _listed_attributes(machine, folder)
    clips: list[Clip] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith(".")):
        parsed = parse_name(path)
        if parsed.split is not None and parsed.split != split:
            raise ValueError(f"{path}: the name says split {parsed.split!r} but the file is in {folder.name}/.")
        domain, label, attributes, hidden, reference = (
            parsed.domain, parsed.label, parsed.attributes, parsed.hidden_attributes, None)
        if parsed.form == "anonymised":
            if parsed.section not in truth_cache:
                truth_cache[parsed.section] = read_ground_truth(ground_truth, machine.name, parsed.section)
            truth = truth_cache[parsed.section]
            if truth:
                if path.name not in truth:
                    raise ValueError(f"{path}: not listed in the ground truth under {ground_truth}.")
                label, domain, reference = truth[path.name]
                if reference is not None:
                    ref = parse_name(reference + ".wav")
                    attributes, hidden = ref.attributes, ref.hidden_attributes
        if listed.get(path.name):  # attributes_00.csv completes what the name says (the name wins on a clash)
            attributes = {**listed[path.name], **dict(attributes)}
        clips.append(Clip(path=path, machine=machine.name, dataset=machine.dataset, split=split,
                          section=parsed.section, index=parsed.index, domain=domain, label=label,
                          attributes=MappingProxyType(dict(attributes)), hidden_attributes=hidden,
                          reference_name=reference))
    return clips


def _listed_attributes(machine: MachineDir, folder: Path) -> dict[str, dict[str, str]]:
    """{wav name: attributes} of one split folder from the machine's attributes_00.csv ({} without the file)."""
    path = machine.path / "attributes_00.csv"
    if not path.is_file():
        return {}
    prefix = f"{folder.name}/"
    out = {}
    for file_name, values in read_attributes_csv(path).items():
        parts = file_name.split("/")
        if len(parts) >= 2 and f"{parts[-2]}/" == prefix:
            out[parts[-1]] = values
    return out


def clips(root: str | Path, machines: str | Iterable[str] | None = "all", split: str = "train") -> list[Clip]:
    """Records of a split for every selected machine (see resolve_machines), machine by machine."""
    out: list[Clip] = []
    for machine in resolve_machines(root, machines):
        out.extend(machine_clips(machine, split))
    return out


def read_ground_truth(gt_dir: str | Path, machine: str, section: str = "00") -> dict[str, tuple[str, str, str | None]]:
    """Evaluator ground truth of one machine: {anonymised name: (label, domain, renamed name or None)}.

    Returns {} when the machine has no ground-truth data file (read by asdx.data.ground_truth).
    """
    if not ground_truth_file(gt_dir, "data", machine, section).is_file():
        return {}
    truth = load_machine_truth(gt_dir, machine, section)
    renamed = {clip: name.removesuffix(".wav") for name, clip in truth.renamed.items()}
    return {name: ("anomaly" if label else "normal", "target" if domain else "source", renamed.get(name))
            for name, label, domain in zip(truth.names, truth.labels, truth.domains)}


def read_attributes_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """``attributes_00.csv`` -> {file_name (``<machine>/<split>/<wav>``): {d1p value: d1v value, ...}}.

    Header ``file_name,d1p,d1v[,d2p,d2v...]``; empty parameter cells (hidden
    attributes) are skipped.
    """
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or not rows[0] or rows[0][0] != "file_name":
        raise ValueError(f"{path}: expected a header starting with 'file_name'.")
    out: dict[str, dict[str, str]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) % 2 != 1:
            raise ValueError(f"{path}:{line_no}: expected file_name then parameter/value pairs, got {row!r}.")
        out[row[0]] = {row[i]: row[i + 1] for i in range(1, len(row), 2) if row[i] != ""}
    return out
