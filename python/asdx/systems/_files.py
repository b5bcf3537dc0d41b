"""The model, checkpoint and bank files the systems write: atomic, format-tagged, checked when read back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from asdx._atomic import atomic_write


def digest(value) -> str:
    """SHA-256 of a JSON-able description: the key a resume checkpoint must match."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_resume(path: Path, map_location="cpu") -> dict | None:
    """The per-epoch checkpoint, or None (absent or unreadable: the training starts over)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # a damaged checkpoint only costs the epochs it held
        return None
    return saved if isinstance(saved, dict) else None


def load_model_file(path: Path, file_format: str, what: str, writer: str) -> dict:
    """A torch model file written with {"format": file_format, ...}; clear errors naming the path otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} ({writer} writes it).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise ValueError(f"{path}: unreadable {what} ({error}).") from error
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise ValueError(f"{path}: not a {what} ({file_format}).")
    return payload


def check_same_config(path: Path, saved: Mapping, current: Mapping, what: str) -> None:
    """A loaded model must come from the current settings (the checkpoint string itself may be spelled otherwise)."""
    differ = {k: (v, saved.get(k)) for k, v in current.items() if k != "beats" and saved.get(k) != v}
    if differ:
        raise ValueError(f"{path}: the {what} was trained with other settings: "
                         + ", ".join(f"{k}={old!r} (now {new!r})" for k, (new, old) in differ.items()) + ".")


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """np.savez, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return atomic_write(path, write)


__all__ = ["check_same_config", "digest", "load_model_file", "read_resume", "save_arrays"]
