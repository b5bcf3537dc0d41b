"""A finished run as a detector: score new recordings with what `asdx run` trained.

Condition monitoring trains once and then scores clips as they arrive. Everything
scoring needs is in the run directory: the config, the global model (fusion), the
machine's model, banks or prototypes, and its gamma threshold. load_detector reads
only that (plus the BEATs checkpoint the config names, for the systems built on it):
nothing is retrained and no dataset root is read. Scoring a run's own test clips
again gives the scores of its test_scores.csv. Audio arrays are scored in memory, through the
same ClipSet streaming as files (asdx.data.loader.ArrayClip), and messages name them by index.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from asdx.config import build_config
from asdx.data.audio import path_of
from asdx.data.dataset import Clip
from asdx.data.loader import ArrayClip, ClipSet, check_headers
from asdx.rundir import RunDir
from asdx.scoring.threshold import GammaThreshold
from asdx.systems import SYSTEMS, make_system
from asdx.systems.base import SystemContext


@dataclass
class DetectorScores:
    """Scores of several clips: names, the final score (higher = more anomalous) and its sub-scores."""

    names: list[str]
    scores: np.ndarray
    sub_scores: dict[str, np.ndarray] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of inputs that were not scored

    def __len__(self) -> int:
        return len(self.names)


def _version_key(version: str) -> tuple[str, ...]:
    """major.minor: the run-directory layout and model files may change between minor versions."""
    return tuple(version.split("+")[0].split(".")[:2])


class Detector:
    """One machine of a finished run: score(inputs) -> DetectorScores, decide(scores) -> 0/1.

    Attributes: system (its name), config (the run's resolved config dict), notes (the run's
    notes), threshold (the run's decision threshold), machine, run_dir.
    """

    def __init__(self, run_dir: Path, machine: str, system, resolved: dict, threshold: GammaThreshold,
                 notes: list[str], workers: int, progress: bool, cache_dir: Path, owns_cache: bool):
        self.run_dir, self.machine = run_dir, machine
        self._system = system
        self.system = resolved["system"]
        self.config = resolved
        self.notes = notes
        self._threshold = threshold
        self.threshold = float(threshold.threshold_)
        self.seconds = resolved.get("seconds")
        self.workers, self.progress = workers, progress
        self._cache_dir, self._owns_cache = cache_dir, owns_cache
        # a detector the caller never closes (no `with`) still removes its temporary cache when collected
        self._remove_cache = weakref.finalize(self, shutil.rmtree, cache_dir, True) if owns_cache else None

    @property
    def channels(self) -> int:
        """Channels each clip must have: 1 (near) or 2 (near, far)."""
        return self._system.input_channels

    def decide(self, scores) -> np.ndarray:
        """1 (anomaly) where a score exceeds the run's threshold, else 0."""
        values = scores.scores if isinstance(scores, DetectorScores) else scores
        return np.asarray(self._threshold.decide(np.asarray(values, dtype=np.float64)))

    def __repr__(self) -> str:
        return (f"Detector(system={self.system!r}, machine={self.machine!r}, run_dir={str(self.run_dir)!r}, "
                f"threshold={self.threshold:.6g})")

    def score(self, inputs) -> DetectorScores:
        """Scores WAV paths (files or folders of *.wav) or audio arrays at 16 kHz: one array (batch,
        channels, samples) or (channels, samples), or a list of (channels, samples) arrays (numpy or torch).

        Arrays are float audio in [-1, 1]; int16 arrays are 16-bit PCM, scaled by 1/32768 as a
        PCM_16 file is read; other integer types are refused. They are scored in memory and named
        "inputs[i]" in the result and in messages. Raises ValueError naming the first bad input;
        score_files collects failures instead.
        """
        if _is_array(inputs) or (isinstance(inputs, (list, tuple)) and inputs and _is_array(inputs[0])):
            return self._score_arrays(inputs)
        result = self.score_files(expand_inputs(inputs))
        if result.failures:
            path, why = result.failures[0]
            raise ValueError(why if why.startswith(path) else f"{path}: {why}")
        return result

    def score_files(self, paths: Sequence[Path]) -> DetectorScores:
        """Scores the readable files; a bad one (sample rate, channels, unreadable) goes to .failures."""
        clips, lengths, failures = [], [], []
        for path in paths:
            try:
                lengths.append(int(check_headers([path], self.channels)[0]))
                clips.append(_new_clip(Path(path), self.machine, len(clips)))
            except (ValueError, FileNotFoundError, OSError) as error:
                failures.append((str(path), str(error)))
        while clips:
            try:
                scores = self._score_clips(clips, np.array(lengths, dtype=np.int64))
                break
            except ValueError as error:  # decoding found a bad file (e.g. NaN samples): drop it, score the rest
                bad = [i for i, c in enumerate(clips) if str(c.path) in str(error)]
                if not bad:
                    raise
                failures.append((str(clips[bad[0]].path), str(error)))
                del clips[bad[0]], lengths[bad[0]]
        else:
            scores = None
        self._empty_owned_cache()
        names = [c.name for c in clips]
        if scores is None:
            return DetectorScores(names, np.zeros(0), {}, failures)
        return DetectorScores(names, scores.scores, dict(scores.sub_scores), failures)

    def _score_clips(self, clips: list[Clip], lengths: np.ndarray):
        test = ClipSet(clips, lengths, self.seconds, self.workers, self.progress, f"{self.machine} clips")
        return self._system.score_machine(test)

    def _score_arrays(self, audio) -> DetectorScores:
        """In-memory audio, checked and named "inputs[i]", streamed through the system as files are."""
        batch = list(audio) if not _is_array(audio) or audio.ndim == 3 else [audio]
        clips = [ArrayClip.from_array(clip, f"inputs[{i}]", self.channels, machine=self.machine, index=i)
                 for i, clip in enumerate(batch)]
        try:
            scores = self._system.score_machine(ClipSet.from_arrays(clips, seconds=self.seconds, workers=self.workers,
                                                                    progress=self.progress,
                                                                    label=f"{self.machine} arrays"))
        finally:
            self._empty_owned_cache()
        return DetectorScores([c.name for c in clips], scores.scores, dict(scores.sub_scores), [])

    def _empty_owned_cache(self) -> None:
        """A temporary cache only serves one call: emptied after each, so `--watch` over days stays bounded."""
        if self._owns_cache and self._cache_dir.exists():
            for entry in self._cache_dir.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def close(self) -> None:
        """Removes the temporary feature cache (when load_detector made one)."""
        if self._remove_cache is not None:
            self._remove_cache()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_array(value) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor))


def _new_clip(path: Path, machine: str, index: int) -> Clip:
    """A clip record for a file outside the dataset: domain and label unknown."""
    return Clip(path=path, machine=machine, dataset="scored", split="test", section="00", index=index, domain=None,
                label=None)


def expand_inputs(inputs: Iterable) -> list[Path]:
    """Files as given; a folder contributes its *.wav files (sorted, not recursive)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        path = path_of(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav"))
        else:
            paths.append(path)
    return paths


def load_detector(run_dir, machine: str, *, device: str | None = None, workers: int = 0, progress: bool = False,
                  cache_dir=None) -> Detector:
    """The detector of one finished machine of a run directory (runs/<system>/<name>).

    device: overrides the run's device (e.g. "cpu" for a run trained on a GPU).
    cache_dir: where frozen-backbone systems cache features of the scored clips (kept, so scoring
    the same files again is cheap); default a temporary folder, emptied after each score call
    and removed by Detector.close().
    """
    import asdx

    run_dir = RunDir(run_dir)
    if not run_dir.config_file.is_file():
        raise FileNotFoundError(f"{run_dir.path}: not an asdx run directory (no config.json).")
    resolved = run_dir.read_config()
    made_by = str(run_dir.read_environment().get("asdx", "unknown"))
    if _version_key(made_by) != _version_key(asdx.__version__):
        raise ValueError(f"{run_dir.path}: made by asdx {made_by}, this is asdx {asdx.__version__}; load it with "
                         f"asdx {'.'.join(_version_key(made_by))}.x or rerun the system.")
    system_name = resolved.get("system")
    if system_name not in SYSTEMS:
        raise ValueError(f"{run_dir.path}: unknown system {system_name!r} in config.json.")
    machine_dir = run_dir.machine_dir(machine)
    if not run_dir.is_finished(machine):
        raise ValueError(f"{machine_dir}: machine {machine!r} did not finish in this run (no done.json); finished: "
                         f"{', '.join(run_dir.finished()) or 'none'}.")
    threshold = GammaThreshold.from_dict(run_dir.read_threshold(machine))

    override = {} if device is None else {"device": device}   # named in messages as --device, not as the file
    config = build_config(SYSTEMS[system_name].config, resolved.get("config", {}), override,
                          source=str(run_dir.config_file))
    owns_cache = cache_dir is None
    cache = Path(tempfile.mkdtemp(prefix="asdx-detector-cache-")) if owns_cache else Path(cache_dir)
    try:
        context = SystemContext(device=getattr(config, "device", "cpu"), progress=progress, workers=workers,
                                cache_dir=cache, log=logging.getLogger("asdx.system"))
        system = make_system(system_name, config, context)
        system.prepare()
        if system.uses_global_stage:
            system.load_global(run_dir.global_dir)
        system.load_machine(machine_dir)
    except BaseException:
        if owns_cache:
            shutil.rmtree(cache, ignore_errors=True)
        raise
    return Detector(run_dir.path, machine, system, resolved, threshold, run_dir.read_notes(), workers, progress,
                    cache, owns_cache)


__all__ = ["Detector", "DetectorScores", "expand_inputs", "load_detector"]
