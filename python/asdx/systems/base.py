"""The system protocol: what `asdx.runner` asks of every system (see the `asdx.systems` docstring).

A system is a class with a config dataclass and up to two stages. The runner
owns every file and folder; a system writes only inside the folder it is handed
and reads audio only through the `ClipSet`s it is handed.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch

from asdx.data.dataset import MachineDir
from asdx.data.loader import ClipSet
from asdx.device import Device
from asdx.systems._stereo import view_channels

SCORE = "score"


@dataclass
class MachineScores:
    """One score per clip (float64, higher = more anomalous) plus the sub-scores it was made from.

    sub_scores keeps its order: it becomes the columns after `score` in
    train_scores.csv / test_scores.csv (for sera: source and target distance).
    threshold_scores (train scores only): the scores the runner fits the gamma
    threshold on when they are not `scores` itself, e.g. only the held-out clips'
    scores, or the official baseline's mini-batch scores (any length); None = `scores`.
    """

    scores: np.ndarray
    sub_scores: dict[str, np.ndarray] = field(default_factory=dict)
    threshold_scores: np.ndarray | None = None

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.scores)
        clean = {}
        for name, values in self.sub_scores.items():
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            if len(values) != n:
                raise ValueError(f"sub_scores[{name!r}]: {len(values)} values for {n} clips.")
            if name == SCORE:
                raise ValueError(f"sub_scores: {SCORE!r} is the final score's column; pick another name.")
            clean[name] = values
        self.sub_scores = clean
        if self.threshold_scores is not None:
            self.threshold_scores = np.asarray(self.threshold_scores, dtype=np.float64).reshape(-1)

    def for_threshold(self) -> np.ndarray:
        """The scores the gamma threshold is fitted on: threshold_scores if given, else scores."""
        return self.scores if self.threshold_scores is None else self.threshold_scores

    def __len__(self) -> int:
        return len(self.scores)

    def columns(self) -> dict[str, np.ndarray]:
        return {SCORE: self.scores, **self.sub_scores}


@dataclass
class SystemContext:
    """What the runner gives a system besides its config: where it runs and where its results go.

    device: given as a torch.device, or as a name (asdx.device.Device: "auto", "cuda:1"...) that is resolved
    here, once; systems read context.device and never resolve the config's device themselves.
    """

    device: torch.device
    progress: bool = True
    workers: int = 0
    cache_dir: Path | None = None  # frozen-backbone feature cache (asdx.models.cache.FeatureCache)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("asdx.system"))
    notes: list[str] = field(default_factory=list)  # every note reaches run.log, metrics.json and the report
    stage_printer: Callable[[str], None] | None = None  # set by the runner

    def __post_init__(self):
        if not isinstance(self.device, torch.device):
            self.device = Device(self.device).resolve()

    def stage(self, text: str) -> None:
        """A progress line (loading, embedding, training, scoring); the runner prefixes `machine k/N: <name>`."""
        (self.stage_printer or self.log.info)(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            self.log.info("note: %s", text)


class System(abc.ABC):
    """Base class of the four systems; the stages a system does not use keep these defaults.

    Global stage (trained once per run on the train splits of several machines):
        uses_global_stage = True, global_machines(), fit_global(), load_global().
        The runner keys the result on (system, global_config(), training files) and
        reuses a finished one from any run of the same system under the same runs folder.
    Per-machine stage:
        fit_machine(machine, train, folder) -> MachineScores of the train clips, which
        must be HONEST (held out: leave-one-out, out-of-fold, held-out clips), because
        the gamma threshold is fitted on them; when only some are (ae's holdout), the
        honest ones go in MachineScores.threshold_scores and the threshold is fitted on
        those; score_machine(test) -> MachineScores.
    Reuse (asdx.load_detector, `asdx score`): load_machine(folder) restores from the
    machine's folder alone everything score_machine needs (after load_global for systems
    with a global stage), so a finished run scores new clips without retraining.
    """

    name: ClassVar[str] = ""
    uses_global_stage: ClassVar[bool] = False
    # the global stage also gets the global machines' labelled test clips (fusion: early stopping on dev Ω)
    wants_global_validation: ClassVar[bool] = False
    # the stage whose training runs DDP under torchrun: every rank calls fit_global ("global", fusion) or
    # fit_machine ("machine", proto: every rank trains and returns the scores, rank 0 alone writes files);
    # None: rank 0 alone
    distributed_stage: ClassVar[str | None] = None
    # config fields that do not change the global model (scoring options, device...), left out of its key
    per_machine_config_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config, context: SystemContext | None = None):
        """context: the runner's; library use without one gets the config's device and defaults."""
        self.config = config
        self.context = context or SystemContext(device=getattr(config, "device", "cpu"))

    @property
    def input_channels(self) -> int:
        """How many channels the runner must decode: 1 (near) or 2 (near, far); a config with a `view` field
        (--view) needs both unless the view is near."""
        return view_channels(getattr(self.config, "view", "near"))

    # ------------------------------------------------------------------ checks before any folder
    def prepare(self) -> None:
        """Loads and checks what the system needs (checkpoints...) before the runner makes any folder."""

    def check_training_clips(self, machine: str, clips: Sequence) -> None:
        """Raises ValueError naming the machine when its train clips cannot work (e.g. no target clips)."""

    # ------------------------------------------------------------------ global stage
    def global_machines(self, available: Sequence[MachineDir]) -> list[MachineDir]:
        """The machines whose train splits the global stage learns from (default: all found)."""
        return list(available)

    def global_config(self) -> Mapping:
        from dataclasses import asdict

        return {k: v for k, v in asdict(self.config).items() if k not in self.per_machine_config_fields}

    def fit_global(self, train: ClipSet, folder: Path, validation: ClipSet | None = None) -> None:
        """Trains the global model into folder; validation: the labelled test clips of the global machines when
        wants_global_validation is set and there are some, else None."""
        raise TypeError(f"{type(self).__name__} has no global stage (uses_global_stage is False).")

    def load_global(self, folder: Path) -> None:
        raise TypeError(f"{type(self).__name__} has no global stage (uses_global_stage is False).")

    # ------------------------------------------------------------------ per-machine stage
    @abc.abstractmethod
    def fit_machine(self, machine: str, train: ClipSet, folder: Path) -> MachineScores:
        """Fits the machine's model or banks; returns honest (held-out) train-normal scores."""

    @abc.abstractmethod
    def load_machine(self, folder: Path):
        """Restores what fit_machine wrote into folder, ready for score_machine; no training, no dataset."""

    @abc.abstractmethod
    def score_machine(self, test: ClipSet) -> MachineScores:
        """Scores the test clips with what fit_machine fitted (or load_machine restored)."""
