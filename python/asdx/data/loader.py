"""Streaming clip audio to the models: DataLoader workers decode WAVs while the model runs.

DCASE 2026 at full size is about 18 GB of float32 stereo, so no split is ever
held in memory whole. Clips are 6, 10 or 16 s; they are cropped to `seconds`
(10 s, system report §1) and never padded, so batches group clips of one
cropped length: no model sees zero padding it was not trained on.

`check_headers` reads only the WAV headers: it is cheap enough to run over every
selected machine before the first training step, and it gives the lengths the
batches are grouped by. Full decoding (NaN/inf checks) happens while streaming.

A ClipSet may also hold `ArrayClip`s, audio already in memory (asdx.detector scores
arrays this way): they stream like files, without a detour through disk, and every
message names them as the caller did (e.g. "inputs[3]").
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import soundfile as sf
import torch

from asdx.data.audio import (PCM16_SCALE, SAMPLE_RATE, AudioWarning, check_float_samples, check_wav_complete,
                             load_clip, path_of)

DEFAULT_BATCH_SIZE = 16


def check_headers(clips: Sequence, channels: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Native lengths (samples) of every clip, from the headers; ValueError naming the first bad file.

    Checks that each file is a readable, complete audio file at `sample_rate` with at
    least `channels` channels (mono counts for one) and at least one sample.
    """
    lengths = np.zeros(len(clips), dtype=np.int64)
    for i, clip in enumerate(clips):
        path = path_of(clip)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such audio file.")
        check_wav_complete(path)
        try:
            header = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError) as error:
            raise ValueError(f"{path}: unreadable audio file ({error}).") from error
        if header.samplerate != sample_rate:
            raise ValueError(f"{path}: sample rate {header.samplerate} Hz, expected {sample_rate} Hz.")
        if header.channels < channels:
            raise ValueError(f"{path}: {header.channels} channel(s), this system needs {channels} (near, far).")
        if header.channels > 2:
            raise ValueError(f"{path}: {header.channels} channels, expected 2 (near, far).")
        if header.frames <= 0:
            raise ValueError(f"{path}: empty audio (0 samples).")
        check_float_samples(path, header.subtype)  # NaN/inf, which no header shows (float formats only)
        lengths[i] = header.frames
    return lengths


@dataclass(frozen=True, eq=False)
class ArrayClip:
    """A test clip held in memory: float32 (channels, samples) at 16 kHz, checked by `from_array`.

    name: what messages and score tables call it (e.g. "inputs[3]"). Domain and label are
    unknown, as for a file outside the dataset. content_key: a hash of the samples, which keys
    its features in asdx.models.cache.FeatureCache where a file's path, size and mtime do.
    """

    audio: np.ndarray = field(repr=False)
    name: str
    machine: str = ""
    index: int = 0
    dataset: str = "scored"
    split: str = "test"
    section: str = "00"
    domain: str | None = None
    label: str | None = None
    content_key: str = field(init=False, repr=False)

    def __post_init__(self):
        digest = hashlib.sha256(f"{self.audio.dtype.str}{self.audio.shape}".encode())
        digest.update(np.ascontiguousarray(self.audio).data)
        object.__setattr__(self, "content_key", digest.hexdigest())

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_array(cls, array, name: str, channels: int, **fields) -> "ArrayClip":
        """Checks audio as the file reader checks a file, naming `name`: (channels, samples), 1 or 2
        channels and at least `channels`, at least one sample, finite. Float audio becomes float32;
        int16 is 16-bit PCM, scaled by 2**-15 as the reader scales a PCM_16 file (so an int16 array
        scores as its WAV does); other integer types are refused (their scale is not known)."""
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        try:
            audio = np.asarray(array)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: cannot be read as an audio array ({error}).") from error
        if audio.dtype.kind == "i" and audio.dtype.itemsize == 2:  # int16, either byte order
            audio = np.multiply(audio, PCM16_SCALE, dtype=np.float32)
        elif audio.dtype.kind in "iub":
            raise ValueError(f"{name}: dtype {audio.dtype} is not float audio; pass float samples in [-1, 1] "
                             "(int16 is read as 16-bit PCM and scaled by 1/32768; other integer types are refused).")
        elif audio.dtype.kind != "f":
            raise ValueError(f"{name}: dtype {audio.dtype} cannot be read as float audio.")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 2:
            raise ValueError(f"{name}: expected (channels, samples), got shape {audio.shape}.")
        n_channels, n_samples = audio.shape
        if n_channels > 2 or n_channels == 0:
            raise ValueError(f"{name}: {n_channels} channels (shape {audio.shape}), expected 1 or 2 (near, far).")
        if n_channels < channels:
            raise ValueError(f"{name}: {n_channels} channel(s), this system needs {channels} (near, far).")
        if n_samples == 0:
            raise ValueError(f"{name}: empty audio (0 samples).")
        bad = ~np.isfinite(audio)
        if bad.any():
            channel, sample = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}: contains NaN or inf (first at channel {channel}, sample {sample}).")
        if not audio.any():
            warnings.warn(f"{name}: the clip is all zeros.", AudioWarning, stacklevel=2)
        return cls(audio, name, **fields)

    def load(self, channels: int) -> np.ndarray:
        """The first `channels` channels, as load_clip returns a file's."""
        if self.audio.shape[0] < channels:
            raise ValueError(f"{self.name}: {self.audio.shape[0]} channel(s), this system needs {channels} (near, far).")
        return self.audio[:channels]


def _label(clip) -> str:
    """What a message calls a clip: an in-memory clip's name, a file's path."""
    return clip.name if isinstance(clip, ArrayClip) else str(path_of(clip))


class _ClipAudio(torch.utils.data.Dataset):
    """Item i -> (i, cropped float32 audio, None) or (i, None, error message): errors cross processes as text."""

    def __init__(self, clips: Sequence, channels: int, crop: np.ndarray):
        self.clips, self.channels, self.crop = list(clips), channels, crop

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip = self.clips[i]
        try:
            audio = clip.load(self.channels) if isinstance(clip, ArrayClip) else load_clip(clip, channels=self.channels,
                                                                                          seconds=None)
        except (ValueError, FileNotFoundError) as error:
            return i, None, str(error)
        if audio.shape[-1] < self.crop[i]:
            return i, None, f"{_label(clip)}: {audio.shape[-1]} samples, the header said {self.crop[i]}."
        return i, np.ascontiguousarray(audio[..., : self.crop[i]]), None


class _Collate:
    """Stacks a batch's audio; `transform` (audio batch -> features) then runs where the batch is
    assembled: in the DataLoader worker when there are workers, overlapping the model's work."""

    def __init__(self, transform=None):
        self.transform = transform

    def __call__(self, items):
        for _, _, error in items:
            if error is not None:
                return error
        indices = np.array([i for i, _, _ in items], dtype=np.int64)
        audio = torch.from_numpy(np.stack([audio for _, audio, _ in items]))
        return indices, (audio if self.transform is None else self.transform(audio))


def _worker_init(_worker_id: int) -> None:
    """One thread per worker process: the workers decode, the main process computes."""
    torch.set_num_threads(1)
    try:
        from asdx import set_num_threads

        set_num_threads(1)
    except ImportError:  # pragma: no cover - the compiled module is always there when asdx is installed
        pass


@dataclass
class ClipSet:
    """Clip records (asdx.data.Clip) of one split, with their native lengths, streamed in equal-length batches."""

    clips: list
    lengths: np.ndarray  # native samples from check_headers
    seconds: float | None = 10.0
    workers: int = 0
    progress: bool = False
    label: str = "clips"

    @classmethod
    def from_clips(cls, clips: Sequence, channels: int, **kwargs) -> "ClipSet":
        clips = list(clips)
        return cls(clips, check_headers(clips, channels), **kwargs)

    @classmethod
    def from_arrays(cls, clips: Sequence[ArrayClip], **kwargs) -> "ClipSet":
        """In-memory clips (ArrayClip.from_array checked them); their lengths are their arrays'."""
        clips = list(clips)
        return cls(clips, np.array([c.audio.shape[-1] for c in clips], dtype=np.int64), **kwargs)

    def __len__(self) -> int:
        return len(self.clips)

    def __post_init__(self):
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if len(self.lengths) != len(self.clips):
            raise ValueError(f"lengths: {len(self.lengths)} for {len(self.clips)} clips.")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds: must be > 0 or None, got {self.seconds!r}.")

    @property
    def cropped_lengths(self) -> np.ndarray:
        if self.seconds is None:
            return self.lengths.copy()
        return np.minimum(self.lengths, int(round(self.seconds * SAMPLE_RATE)))

    def subset(self, indices) -> "ClipSet":
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        return ClipSet([self.clips[i] for i in indices], self.lengths[indices], self.seconds, self.workers,
                       self.progress, self.label)

    def batch_plan(self, batch_size: int) -> list[list[int]]:
        """Index batches: clips of one cropped length together, in file order within a length."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}.")
        crop = self.cropped_lengths
        plan = []
        for length in sorted(set(crop.tolist()), reverse=True):
            members = np.flatnonzero(crop == length).tolist()
            plan.extend(members[s : s + batch_size] for s in range(0, len(members), batch_size))
        return plan

    def batches(self, channels: int, batch_size: int = DEFAULT_BATCH_SIZE, desc: str | None = None,
                plan: Sequence[Sequence[int]] | None = None,
                transform=None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yields (indices into this set, float32 audio (batch, channels, samples)) until every clip was seen once.

        plan: the index batches to load, in order (each of one cropped length), instead of batch_plan(batch_size);
        a training loop passes its shuffled batches here.
        transform: audio batch tensor -> what is yielded instead (e.g. features), computed in the
        DataLoader worker when there are workers (one torch/asdx thread each), else here.
        """
        if channels not in (1, 2):
            raise ValueError(f"channels: expected 1 or 2, got {channels!r}.")
        if len(self) == 0:
            return
        from tqdm.auto import tqdm

        crop = self.cropped_lengths
        if plan is None:
            plan = self.batch_plan(batch_size)
        else:
            plan = [[int(i) for i in batch] for batch in plan]
            for batch in plan:
                if len(set(crop[batch].tolist())) > 1:
                    raise ValueError(f"plan: batch {batch[:4]}... mixes cropped lengths; batches are never padded.")
        dataset = _ClipAudio(self.clips, channels, crop)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=plan, collate_fn=_Collate(transform), num_workers=self.workers,
            worker_init_fn=_worker_init if self.workers else None, prefetch_factor=2 if self.workers else None,
            persistent_workers=False)
        with tqdm(total=sum(len(batch) for batch in plan), desc=desc or self.label, unit="clip", disable=not self.progress,
                  leave=False) as bar:
            for item in loader:
                if isinstance(item, str):
                    raise ValueError(item)
                yield item
                bar.update(len(item[0]))

    def load_all(self, channels: int, batch_size: int = DEFAULT_BATCH_SIZE) -> list[np.ndarray]:
        """Every clip's audio in order, (channels, samples) each: for small sets and tests only."""
        out: list = [None] * len(self)
        for indices, audio in self.batches(channels, batch_size):
            for i, clip_audio in zip(indices, audio.numpy()):
                out[i] = clip_audio
        return out
