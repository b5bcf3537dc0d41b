"""DCASE Task 2 clip file names: parse every released form into typed fields.

Forms (as released in the DCASE 2020-2026 Task 2 data sets):

* labelled: ``section_<SS>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>_<attrs>.wav``
  (``<attrs>`` is ``key_value[_key_value...]``, ``noAttribute`` when the attributes are
  hidden, or empty as in the README placeholders ``..._0000_.wav``); the renamed 2024
  RoboticArm test names omit the ``_test_`` token, so the split is optional;
* anonymised eval test: ``section_<SS>_<NNNN>.wav`` (section and index only);
* 2025 supplemental: ``section_<SS>_machine_<NNNN>_.wav``.

Indices are returned as written: 2023/2025 sets count from 0, 2024 from 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

HIDDEN_ATTRIBUTES = "noAttribute"
DOMAINS = ("source", "target")
SPLITS = ("train", "test")
LABELS = ("normal", "anomaly")

_LABELLED = re.compile(
    r"section_(?P<section>\d+)_(?P<domain>source|target)(?:_(?P<split>train|test))?"
    r"_(?P<label>normal|anomaly)_(?P<index>\d+)(?:_(?P<attrs>.*))?"
)
_ANONYMISED = re.compile(r"section_(?P<section>\d+)_(?P<index>\d+)")
_SUPPLEMENTAL = re.compile(r"section_(?P<section>\d+)_machine_(?P<index>\d+)(?:_(?P<attrs>.*))?")


@dataclass(frozen=True)
class ClipName:
    """What a clip's file name says. Fields the name does not carry are None."""

    name: str
    form: str  # "labelled", "anonymised" or "supplemental"
    section: str
    index: int
    domain: str | None = None
    split: str | None = None
    label: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)
    hidden_attributes: bool = False
    attribute_string: str = ""

    @property
    def stem(self) -> str:
        return self.name[: -len(".wav")]


def parse_attributes(text: str, name: str = "") -> tuple[dict[str, str], bool]:
    """Splits an attribute string into ordered key/value pairs; returns (attributes, hidden).

    ``noAttribute`` means the attributes are hidden (hidden=True, no pairs); an empty
    string means none. Tokens pair up in order (key, value); a last unpaired token (as
    in the documented ``..._wt_200_damage1``) becomes a key with the value "".
    """
    if text == "":
        return {}, False
    tokens = text.split("_")
    if tokens == [HIDDEN_ATTRIBUTES]:
        return {}, True
    where = f" in {name!r}" if name else ""
    if HIDDEN_ATTRIBUTES in tokens:
        raise ValueError(f"attributes {text!r}{where}: '{HIDDEN_ATTRIBUTES}' must stand alone.")
    if "" in tokens:
        raise ValueError(f"attributes {text!r}{where}: empty token (doubled or trailing '_').")
    attributes: dict[str, str] = {}
    for i in range(0, len(tokens), 2):
        key = tokens[i]
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        if key in attributes:
            raise ValueError(f"attributes {text!r}{where}: key {key!r} appears twice.")
        attributes[key] = value
    return attributes, False


def parse_name(path: str | Path) -> ClipName:
    """Parses a DCASE clip file name (a path is fine; only its base name is read).

    Raises ValueError naming the file when the name is none of the documented forms.
    """
    name = Path(path).name
    if not name.lower().endswith(".wav"):
        raise ValueError(f"{name!r}: not a .wav file name.")
    stem = name[: -len(".wav")]
    match = _LABELLED.fullmatch(stem)
    if match:
        attrs_text = match["attrs"] or ""
        attributes, hidden = parse_attributes(attrs_text, name)
        return ClipName(
            name=name, form="labelled", section=match["section"], index=int(match["index"]),
            domain=match["domain"], split=match["split"], label=match["label"],
            attributes=MappingProxyType(attributes), hidden_attributes=hidden, attribute_string=attrs_text,
        )
    match = _ANONYMISED.fullmatch(stem)
    if match:
        return ClipName(name=name, form="anonymised", section=match["section"], index=int(match["index"]),
                        attributes=MappingProxyType({}))
    match = _SUPPLEMENTAL.fullmatch(stem)
    if match:
        attrs_text = match["attrs"] or ""
        attributes, hidden = parse_attributes(attrs_text, name)
        return ClipName(name=name, form="supplemental", section=match["section"], index=int(match["index"]),
                        attributes=MappingProxyType(attributes), hidden_attributes=hidden,
                        attribute_string=attrs_text)
    raise ValueError(
        f"{name!r}: not a DCASE clip name; expected section_<SS>_<source|target>_<train|test>_"
        f"<normal|anomaly>_<NNNN>_<attributes>.wav, the anonymised section_<SS>_<NNNN>.wav "
        f"or the supplemental section_<SS>_machine_<NNNN>_.wav."
    )


def labelled_name(section: str, domain: str, split: str | None, label: str, index: int,
                  attributes: Mapping[str, str] | None, hidden: bool = False, digits: int = 4) -> str:
    """Builds a labelled file name (the inverse of parse_name); hidden=True writes noAttribute."""
    if domain not in DOMAINS or label not in LABELS or (split is not None and split not in SPLITS):
        raise ValueError(f"labelled_name: bad domain/split/label {domain!r}/{split!r}/{label!r}.")
    parts = [f"section_{section}", domain] + ([split] if split else []) + [label, f"{index:0{digits}d}"]
    if hidden:
        parts.append(HIDDEN_ATTRIBUTES)
    else:
        for key, value in (attributes or {}).items():
            parts.extend([key, value] if value != "" else [key])
    return "_".join(parts) + ".wav"


def anonymised_name(section: str, index: int, digits: int = 4) -> str:
    """The anonymised eval test name ``section_<SS>_<NNNN>.wav``."""
    return f"section_{section}_{index:0{digits}d}.wav"
