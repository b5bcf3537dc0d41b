"""The options of every `asdx run`, whatever the system: one annotated dataclass, RunOptions.

Declared like the system configs (asdx.config; asdx.systems.configs): `asdx run` makes its "run options"
flags from these fields, and RunOptions(...) in Python gets the same checks and messages. Light on purpose
(standard library, pydantic, asdx.config): building the command line imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from asdx.config import validate_fields

# "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2", §1: every system
# processes 16 kHz waveforms cropped to 10 s clips, and thresholds a gamma fitted to train-normal scores at q = 0.9.
DEFAULT_SECONDS = 10.0
THRESHOLD_Q = 0.9
MACHINES_HELP = "machine types, or dev, eval, all; several comma- or space-separated (fan,valveEmu or fan valveEmu)"


def default_workers() -> int:
    """The command line's DataLoader workers: min(4, cores - 1), leaving one core to the main process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


def _data_from_environment() -> str:
    return os.environ.get("ASDX_DATA", "data")


@dataclass
class RunOptions:
    """What a run is, apart from the system's own config: which system on which data, where to, and how.

    The command line sets `system` from its subcommand and `progress` from --quiet; `notes` is for
    callers such as asdx.demo. Where the command line's default differs from Python's ("cli_default":
    $ASDX_DATA, the workers), the help says so.
    """

    system: str = field(metadata={"help": "the system (a key of asdx.systems.SYSTEMS)", "cli": False})
    machines: str = field(default="all", metadata={
        "help": MACHINES_HELP, "flags": ("--machine", "--machines"), "nargs": "+", "metavar": "M"})
    data: Path = field(default=Path("data"), metadata={
        "help": "dataset root", "cli_default": _data_from_environment, "default_help": "$ASDX_DATA or ./data"})
    out: Path = field(default=Path("runs"), metadata={"help": "runs folder"})
    name: str | None = field(default=None, metadata={
        "help": "run name", "default_help": "<machines>-seed<seed>; with --seeds the parent folder's, "
                                            "<machines>-seeds"})
    resume: bool = field(default=False, metadata={
        "help": "continue a run: finished machines are skipped and training restarts from the last checkpoint"})
    seconds: Annotated[float, Field(gt=0)] = field(default=DEFAULT_SECONDS, metadata={
        "help": "crop every clip to this many seconds"})
    progress: bool = field(default=True, metadata={"help": "progress bars (the command line's --quiet: none)",
                                                   "cli": False})
    notes: tuple[str, ...] = field(default=(), metadata={"help": "caveats the run records first", "cli": False})
    threshold_q: Annotated[float, Field(gt=0, lt=1)] = field(default=THRESHOLD_Q, metadata={
        "help": "decision threshold: this quantile of the gamma fit to the train-normal scores"})
    workers: Annotated[int, Field(ge=0)] = field(default=0, metadata={
        "help": "DataLoader worker processes decoding audio (0 = in the main process)",
        "cli_default": default_workers, "default_help": f"min(4, cores - 1) = {default_workers()} here; 0 in Python"})
    cache_dir: Path | None = field(default=None, metadata={
        "help": "feature cache folder of frozen-backbone systems", "flags": ("--cache",),
        "default_help": "<out>/cache"})

    def __post_init__(self):
        validate_fields(self)

    @property
    def cache(self) -> Path:
        """The feature cache folder: cache_dir, or <out>/cache."""
        return Path(self.cache_dir) if self.cache_dir is not None else Path(self.out) / "cache"


__all__ = ["DEFAULT_SECONDS", "MACHINES_HELP", "RunOptions", "THRESHOLD_Q", "default_workers"]
