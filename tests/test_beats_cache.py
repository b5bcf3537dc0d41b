"""The per-clip feature cache: hits, misses, invalidation and interrupted writes."""

import os

import numpy as np
import pytest
import torch

from asdx.models import cache as cache_module
from asdx.models.beats_checkpoint import random_tiny_beats
from asdx.models.cache import FeatureCache, beats_preprocessing


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = folder / f"clip{i}.npy"
        np.save(path, rng.uniform(-0.5, 0.5, 4000).astype(np.float32))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def model():
    return random_tiny_beats(seed=2)


def _counting_extractor(model, layer):
    """compute(): BEATs layer tokens of the clips, counting how many clips went through the model."""
    calls = {"clips": 0}

    def compute(paths):
        calls["clips"] += len(paths)
        wave = torch.from_numpy(np.stack([np.load(p) for p in paths]))
        with torch.no_grad():
            return model.extract(wave, layers=[layer]).hidden[layer].numpy()

    return compute, calls


def test_second_pass_and_later_epochs_never_recompute(tmp_path, clips, model):
    cache = FeatureCache(tmp_path / "cache", model.fingerprint(), layer=1, preprocessing=beats_preprocessing())
    compute, calls = _counting_extractor(model, 1)
    first = cache.map(clips, compute, batch_size=2)
    assert calls["clips"] == 3 and cache.misses == 3 and cache.hits == 0
    for _epoch in range(3):
        again = cache.map(clips, compute)
    assert calls["clips"] == 3 and cache.hits == 9
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
        assert a.shape == (8, 64)  # 4000 samples -> 23 fbank frames -> 1 time patch x 8 bands
    with torch.no_grad():
        direct = model.extract(torch.from_numpy(np.load(clips[0]))[None], layers=[1]).hidden[1][0].numpy()
    np.testing.assert_array_equal(again[0], direct)


def test_changed_clip_file_is_a_miss(tmp_path, clips, model):
    cache = FeatureCache(tmp_path / "cache", model.fingerprint(), layer=2, preprocessing=beats_preprocessing())
    compute, calls = _counting_extractor(model, 2)
    cache.map(clips, compute)
    np.save(clips[1], np.zeros(4000, dtype=np.float32))  # rewritten: new content, size may even stay the same
    os.utime(clips[1], ns=(1, 1))  # and a different mtime, as a rewrite gives
    out = cache.map(clips, compute)
    assert calls["clips"] == 4
    np.testing.assert_array_equal(out[1], compute([clips[1]])[0])


def test_changed_checkpoint_layer_or_preprocessing_is_a_miss(tmp_path, clips, model):
    root = tmp_path / "cache"
    base = FeatureCache(root, model.fingerprint(), layer=1, preprocessing=beats_preprocessing(seconds=10.0))
    base.put(clips[0], np.ones((4, 2), np.float32))
    other_weights = random_tiny_beats(seed=3)
    assert other_weights.fingerprint() != model.fingerprint()
    variants = [FeatureCache(root, other_weights.fingerprint(), 1, beats_preprocessing(seconds=10.0)),
                FeatureCache(root, model.fingerprint(), 2, beats_preprocessing(seconds=10.0)),
                FeatureCache(root, model.fingerprint(), 1, beats_preprocessing(seconds=12.0)),
                FeatureCache(root, model.fingerprint(), 1, beats_preprocessing(seconds=10.0), kind="gem3")]
    assert all(v.get(clips[0]) is None for v in variants)
    same = FeatureCache(root, model.fingerprint(), layer=1, preprocessing=beats_preprocessing(seconds=10.0))
    np.testing.assert_array_equal(same.get(clips[0]), np.ones((4, 2), np.float32))


def test_checkpoint_file_change_changes_the_fingerprint(tmp_path, model):
    path = model.save_checkpoint(tmp_path / "b.pt")
    from asdx.models.beats import BEATs

    before = BEATs.from_checkpoint(path).fingerprint()
    assert before == model.fingerprint()  # content hash: the same weights give the same key, wherever they live
    changed = random_tiny_beats(seed=9)
    changed.save_checkpoint(path)
    assert BEATs.from_checkpoint(path).fingerprint() != before


def test_interrupted_write_leaves_no_entry(tmp_path, clips, model, monkeypatch):
    cache = FeatureCache(tmp_path / "cache", model.fingerprint(), layer=1, preprocessing=beats_preprocessing())
    real_savez = np.savez

    def savez_then_interrupt(handle, **arrays):
        real_savez(handle, **arrays)
        handle.write(b"garbage")  # part of the file is on disk when the interrupt arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.np, "savez", savez_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        cache.put(clips[0], np.ones(3, np.float32))
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cache.get(clips[0]) is None


def test_leftover_partial_file_is_ignored_and_cleaned(tmp_path, clips, model):
    cache = FeatureCache(tmp_path / "cache", model.fingerprint(), layer=1, preprocessing=beats_preprocessing())
    entry = cache.entry_path(clips[0])
    entry.parent.mkdir(parents=True)
    leftover = entry.parent / f".{entry.name}.abc123.partial"  # what a killed writer leaves behind
    leftover.write_bytes(b"half an npz")
    assert cache.get(clips[0]) is None
    assert cache.clean_partials() == 1 and not leftover.exists()


def test_corrupt_or_foreign_entry_is_a_miss_and_gets_replaced(tmp_path, clips, model):
    cache = FeatureCache(tmp_path / "cache", model.fingerprint(), layer=1, preprocessing=beats_preprocessing())
    entry = cache.entry_path(clips[0])
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"not an npz")
    assert cache.get(clips[0]) is None
    cache.put(clips[0], np.full(2, 5.0))
    np.testing.assert_array_equal(cache.get(clips[0]), np.full(2, 5.0))


def test_bad_arguments(tmp_path, clips, model):
    with pytest.raises(ValueError, match="model_fingerprint"):
        FeatureCache(tmp_path, "short", 1, {})
    cache = FeatureCache(tmp_path / "c", model.fingerprint(), 1, {})
    with pytest.raises(FileNotFoundError, match="clip"):
        cache.get(tmp_path / "absent.wav")
    with pytest.raises(ValueError, match="compute"):
        cache.map(clips, lambda paths: [np.zeros(1)])
    with pytest.raises(ValueError, match="features"):
        cache.put(clips[0], np.zeros(2, dtype=np.int64))


def test_clip_record_names_the_same_entry_as_its_path(tmp_path, clips, model):
    from asdx.data import Clip

    records = [Clip(path=p, machine="fan", dataset="dev", split="train", section="00", index=i, domain="source",
                    label="normal") for i, p in enumerate(clips)]
    cache = FeatureCache(tmp_path / "cache", model.fingerprint(), layer=1, preprocessing=beats_preprocessing())
    assert cache.entry_path(records[0]) == cache.entry_path(clips[0])
    assert cache.meta(records[0]) == cache.meta(clips[0])
    assert not cache.contains(records[0])
    compute, calls = _counting_extractor(model, 1)
    from_records = cache.map(records, lambda batch: compute([r.path for r in batch]))
    assert calls["clips"] == 3 and all(cache.contains(r) and cache.contains(p) for r, p in zip(records, clips))
    from_paths = cache.map(clips, compute)  # the records' entries serve the plain paths: nothing recomputed
    assert calls["clips"] == 3
    for a, b in zip(from_records, from_paths):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="absent"):
        cache.get(Clip(path=tmp_path / "absent.wav", machine="fan", dataset="dev", split="train", section="00",
                       index=0, domain="source", label="normal"))
