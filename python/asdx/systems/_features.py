"""Cached per-clip features of the BEATs systems (BEATs layer states, proto's stereo features): store and batches.

The systems train on features of frozen front ends, so those are computed once per
clip, stored float16 in the FeatureCache, and read every epoch: held in RAM when
they fit the `feature_memory_mb` budget, else read back from the cache batch by
batch (the batches, and so the results, are the same either way). Batches hold clips
of one cropped length: BEATs and the poolings get no padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from asdx.data.loader import ClipSet
from asdx.models.cache import FeatureCache
from asdx.splits import holdout


class FeatureStore(torch.utils.data.Dataset):
    """Float16 features of a clip list: held in RAM, or read from the cache per batch (item = an index batch)."""

    def __init__(self, cache: FeatureCache, clips: Sequence, held: list | None):
        # plain paths (the cache keys them like the records): picklable for DataLoader workers; an in-memory
        # clip (asdx.data.loader.ArrayClip) has no path and stays itself (the cache keys it by its samples)
        self.cache, self.held = cache, held
        self.paths = [c if hasattr(c, "content_key") else Path(getattr(c, "path", c)) for c in clips]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "FeatureStore":
        """The store of some of its clips, in the order of indices (features held in RAM stay shared)."""
        subset = FeatureStore(self.cache, [], None if self.held is None else [self.held[i] for i in indices])
        subset.paths = [self.paths[i] for i in indices]
        return subset

    def _read(self, i: int) -> np.ndarray:
        features = self.cache.get(self.paths[i])
        if features is None:
            raise ValueError(f"{self.cache.entry_path(self.paths[i])}: the cached {self.cache.kind} of "
                             f"{self.paths[i]} are missing or unreadable; delete that file and run again.")
        return features

    def __getitem__(self, indices) -> tuple[np.ndarray, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        arrays = [self.held[i] if self.held is not None else self._read(int(i)) for i in indices]
        return indices, torch.from_numpy(np.stack(arrays))


def fill_feature_store(cache: FeatureCache, clips: ClipSet, forward: Callable[[torch.Tensor], np.ndarray],
                       memory_bytes: int, batch_size: int, total_bytes: int,
                       stage: Callable[[str], None] = lambda text: None, desc: str = "BEATs tokens",
                       channels: int = 1) -> FeatureStore:
    """Makes sure every clip's features are cached (computing only the missing clips) and returns their store.

    forward maps a (B, channels, samples) batch to float16 features (B, ...); total_bytes is the
    expected size of all clips' features, held in RAM when it fits memory_bytes.
    """
    held: list | None = None
    if total_bytes <= memory_bytes:
        held = [cache.get(clip) for clip in clips.clips]
        missing = [i for i, features in enumerate(held) if features is None]
    else:
        missing = [i for i, clip in enumerate(clips.clips) if not cache.contains(clip)]
    if missing:
        stage(f"embedding: {desc} of {len(missing)} clips ({len(clips) - len(missing)} cached)")
        for indices, audio in clips.subset(missing).batches(channels, batch_size, desc=desc):
            for j, features in zip(indices, forward(audio)):
                i = missing[int(j)]
                cache.put(clips.clips[i], features)
                if held is not None:
                    held[i] = features
    return FeatureStore(cache, clips.clips, held)


def store_batches(store: FeatureStore, batches: list[np.ndarray], workers: int):
    """The (indices, features) batches in order; streamed stores are read in worker processes when workers > 0."""
    workers = workers if store.held is None else 0
    if workers == 0:
        return (store[b] for b in batches)
    return torch.utils.data.DataLoader(store, batch_size=None, sampler=batches, num_workers=workers,
                                       collate_fn=_as_given, prefetch_factor=2, persistent_workers=False)


def _as_given(item):
    """DataLoader collate for ready-made (indices, features) batches: keeps the indices a NumPy array."""
    return item


def split_validation(clips: Sequence, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded holdout stratified by (machine, domain), round(fraction * n) of
    each group to validation, >= 1 kept (asdx.splits.holdout)."""
    return holdout([(clip.machine, clip.domain or "") for clip in clips], fraction, seed)


def length_batches(indices: np.ndarray, lengths: np.ndarray, batch_size: int,
                   rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Batches of clips of one cropped length (no padding); shuffled within and across when rng is given."""
    indices = np.asarray(indices, dtype=np.int64)
    batches = []
    for length in sorted(set(lengths[indices].tolist()), reverse=True):
        members = indices[lengths[indices] == length]
        if rng is not None:
            members = rng.permutation(members)
        batches.extend(members[s : s + batch_size] for s in range(0, len(members), batch_size))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


__all__ = ["FeatureStore", "fill_feature_store", "length_batches", "split_validation", "store_batches"]
