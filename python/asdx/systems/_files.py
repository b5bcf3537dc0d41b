"""The state files the systems write: atomic, tagged with their format, checked when read back.

Two kinds, one rule: `.pt` model files (torch payloads: heads, fine-tuned blocks, networks) and
`.npz` state files (arrays: banks, prototypes, a machine's scorer) both carry {"format": "asdx.<what>/<n>"};
a file without that tag, with another one or unreadable is refused with an error naming the path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from asdx._atomic import atomic_write


def _load(path: Path, file_format: str, what: str, writer: str, read):
    """read(path) -> (content, its format tag); clear errors naming the path for a missing, unreadable or foreign
    file, and for one of an older format of the same kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} ({writer} writes it).")
    try:
        content, found = read(path)
    except Exception as error:  # torch and NumPy raise several types for a damaged or foreign file
        raise ValueError(f"{path}: unreadable {what} ({error}).") from error
    if found != file_format:
        older = isinstance(found, str) and found.split("/")[0] == file_format.split("/")[0]
        raise ValueError(f"{path}: not a {what} ({file_format})"
                         + (f"; it is {found}, from an older asdx: run it again." if older else "."))
    return content


def _read_torch(path: Path):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload, payload.get("format") if isinstance(payload, dict) else None


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    found = arrays.pop("format", None)
    return arrays, None if found is None else str(found)


def save_model_file(path: Path, file_format: str, payload: Mapping) -> Path:
    """torch.save of {"format": file_format, **payload}, atomically."""
    tagged = {"format": file_format, **payload}
    return atomic_write(Path(path), lambda tmp: torch.save(tagged, tmp))


def load_model_file(path: Path, file_format: str, what: str, writer: str) -> dict:
    """The payload save_model_file wrote (with its tag), checked."""
    return _load(path, file_format, what, writer, _read_torch)


def save_arrays(path: Path, file_format: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """np.savez of the arrays and the format tag, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, format=np.array(file_format), **arrays)

    return atomic_write(Path(path), write)


def load_arrays(path: Path, file_format: str, what: str, writer: str) -> dict[str, np.ndarray]:
    """The arrays save_arrays wrote (without the tag), checked."""
    return _load(path, file_format, what, writer, _read_npz)


def save_state(path: Path, file_format: str, state) -> Path:
    """A dataclass whose fields are arrays, strings and numbers, as a format-tagged .npz (save_arrays)."""
    return save_arrays(path, file_format, {f.name: np.asarray(getattr(state, f.name))
                                           for f in dataclasses.fields(state)})


def load_state(cls, path: Path, file_format: str, what: str, writer: str):
    """The dataclass save_state wrote: 0-d arrays come back as Python scalars (str, int, float)."""
    arrays = load_arrays(path, file_format, what, writer)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"{path}: not a complete {what} ({file_format}): no {', '.join(missing)}.")
    return cls(**{name: arrays[name].item() if arrays[name].ndim == 0 else arrays[name] for name in names})


def check_same_config(path: Path, saved: Mapping, current: Mapping, what: str) -> None:
    """A loaded model must come from the current settings (the checkpoint string itself may be spelled otherwise)."""
    differ = {k: (v, saved.get(k)) for k, v in current.items() if k != "beats" and saved.get(k) != v}
    if differ:
        raise ValueError(f"{path}: the {what} was trained with other settings: "
                         + ", ".join(f"{k}={old!r} (now {new!r})" for k, (new, old) in differ.items()) + ".")


__all__ = ["check_same_config", "load_arrays", "load_model_file", "load_state", "save_arrays",
           "save_model_file", "save_state"]
