"""On-disk cache of frozen-backbone features per clip, so head training never recomputes BEATs.

An entry is one .npz per clip (`features` plus the `meta` it was made from). The
key hashes everything that changes the features: the model fingerprint (content
hash of the cfg and weights), the clip file's resolved path, size and mtime
(ns), the layer, what is stored (tokens or a pooling) and the preprocessing
description. A changed checkpoint or a rewritten clip gives a new key: the old
entry is simply not found. Entries are written with asdx._atomic (temp file,
then rename), so an interrupted run leaves either a whole entry or none;
leftover temp files are removed by `clean_partials`. Only valid for a frozen
backbone: a model being trained changes its fingerprint.

A clip is given as a path or as a record with a ``.path`` (asdx.data.Clip, as
ClipSet holds them); both name the same entry. A clip held in memory
(asdx.data.loader.ArrayClip) has no file: its `content_key`, a hash of its
samples, stands in for the path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from asdx._atomic import PARTIAL_SUFFIX, atomic_write

CACHE_VERSION = 1


def _clip_path(clip) -> Path:
    """The file behind a clip argument: a record's ``.path`` (asdx.data.Clip) or the path itself."""
    return Path(clip.path if hasattr(clip, "path") else clip)


def beats_preprocessing(**extra) -> dict:
    """The BEATs front end as a cache-key description (BEATs.preprocess), plus caller details (crop, channel...)."""
    from asdx.features.fbank import BEATS_MEAN, BEATS_STD

    return {"frontend": "kaldi_fbank", "scale": 2**15, "n_mels": 128, "sample_rate": 16000, "frame_length_ms": 25.0,
            "frame_shift_ms": 10.0, "mean": BEATS_MEAN, "std": BEATS_STD, "std_factor": 2, **extra}


class FeatureCache:
    """get/put/map of per-clip feature arrays under `root`, keyed as described in the module docstring."""

    def __init__(self, root, model_fingerprint: str, layer: int, preprocessing: Mapping, kind: str = "tokens"):
        if not isinstance(model_fingerprint, str) or len(model_fingerprint) < 16:
            raise ValueError("model_fingerprint: expected a content hash string (BEATs.fingerprint()).")
        self.root = Path(root)
        self.model_fingerprint = model_fingerprint
        self.layer = int(layer)
        self.kind = str(kind)
        self.preprocessing = json.loads(json.dumps(dict(preprocessing), sort_keys=True, default=str))
        self.folder = self.root / model_fingerprint[:16]
        self.hits = 0
        self.misses = 0

    def meta(self, clip) -> dict:
        """What an entry for this clip (path or Clip record) must have been computed from (the clip must exist)."""
        content = getattr(clip, "content_key", None)
        if content is not None:  # in memory (ArrayClip): the samples themselves
            source = {"content": content}
        else:
            path = _clip_path(clip).resolve()
            try:
                stat = path.stat()
            except OSError as error:
                raise FileNotFoundError(f"clip: {path} cannot be read ({error}).") from error
            source = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return {"version": CACHE_VERSION, "model": self.model_fingerprint, **source, "layer": self.layer,
                "kind": self.kind, "preprocessing": self.preprocessing}

    @staticmethod
    def _key(meta: dict) -> str:
        return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()

    def entry_path(self, clip) -> Path:
        key = self._key(self.meta(clip))
        return self.folder / key[:2] / f"{key}.npz"

    def contains(self, clip) -> bool:
        """Whether an entry for this clip exists, without reading it (get() still validates it)."""
        return self.entry_path(clip).is_file()

    def get(self, clip) -> np.ndarray | None:
        """The cached array, or None (missing, from other inputs, or unreadable)."""
        meta = self.meta(clip)
        key = self._key(meta)
        entry = self.folder / key[:2] / f"{key}.npz"
        try:
            with np.load(entry, allow_pickle=False) as data:
                if json.loads(str(data["meta"])) != meta:
                    raise ValueError("meta mismatch")
                features = data["features"]
        except (OSError, ValueError, KeyError, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return features

    def put(self, clip, features: np.ndarray) -> Path:
        """Stores one clip's features atomically; returns the entry path."""
        meta = self.meta(clip)
        key = self._key(meta)
        entry = self.folder / key[:2] / f"{key}.npz"
        entry.parent.mkdir(parents=True, exist_ok=True)
        array = np.ascontiguousarray(features)
        if array.dtype.kind != "f":
            raise ValueError(f"features: expected a float array, got dtype {array.dtype}.")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, features=array, meta=np.array(json.dumps(meta, sort_keys=True)))
                handle.flush()
                os.fsync(handle.fileno())

        return atomic_write(entry, write)

    def map(self, clips: Sequence, compute: Callable[[list], Sequence[np.ndarray]], batch_size: int = 16) \
            -> list[np.ndarray]:
        """Features of every clip, in order: cached ones are read, the others computed in batches and stored.

        compute(list of clips) must return one array per clip (e.g. a (batch, ...) array).
        Each batch is stored as soon as it is computed, so an interrupted run keeps its progress.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}.")
        clips = list(clips)
        out: list[np.ndarray | None] = [self.get(clip) for clip in clips]
        todo = [i for i, value in enumerate(out) if value is None]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            computed = compute([clips[i] for i in chunk])
            if len(computed) != len(chunk):
                raise ValueError(f"compute: returned {len(computed)} arrays for {len(chunk)} clips.")
            for i, features in zip(chunk, computed):
                features = np.asarray(features)
                self.put(clips[i], features)
                out[i] = features
        return out  # type: ignore[return-value]

    def clean_partials(self) -> int:
        """Removes temp files left by an interrupted writer (killed before its rename); returns how many."""
        removed = 0
        if self.folder.is_dir():
            for leftover in self.folder.rglob(f".*{PARTIAL_SUFFIX}"):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed
