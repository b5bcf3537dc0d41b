"""Audio loading: shapes, crop/pad, resampling and the errors that name the file."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from asdx.data import AudioWarning, load_clip, load_clips
from asdx.data.dataset import Clip


def _stereo(n=16000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (n, 2))


def _write(path, frames, rate=16000, subtype="PCM_16"):
    sf.write(str(path), frames, rate, subtype=subtype)
    return path


def test_stereo_float32_channels_first_and_fixed_length(tmp_path):
    frames = _stereo(24000)
    path = _write(tmp_path / "a.wav", frames)
    native = load_clip(path, seconds=None)
    assert native.dtype == np.float32 and native.shape == (2, 24000)
    np.testing.assert_allclose(native, frames.T, atol=1 / 32768 + 1e-7)
    assert load_clip(path).shape == (2, 24000)  # default: the native length, no padding
    assert load_clip(path, seconds=10.0).shape == (2, 24000)  # crops, never pads unless asked
    padded = load_clip(path, seconds=10.0, pad=True)
    assert padded.shape == (2, 160000)
    np.testing.assert_array_equal(padded[:, :24000], native)
    assert not padded[:, 24000:].any()
    cropped = load_clip(path, seconds=1.0)
    np.testing.assert_array_equal(cropped, native[:, :16000])
    near = load_clip(path, channels=1, seconds=None)
    np.testing.assert_array_equal(near, native[:1])


def test_accepts_records(tmp_path):
    path = _write(tmp_path / "section_00_0000.wav", _stereo())
    clip = Clip(path=path, machine="fan", dataset="eval", split="test", section="00", index=0, domain=None,
                label=None)
    assert load_clips([clip, path], seconds=None).shape == (2, 2, 16000)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(os.urandom(2000))
    with pytest.raises(ValueError, match="unreadable") as info:
        load_clip(path)
    assert str(path) in str(info.value)


def test_truncated_data_chunk(tmp_path):
    path = _write(tmp_path / "full.wav", _stereo())
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:30000])
    with pytest.raises(ValueError, match="truncated") as info:
        load_clip(cut)
    assert str(cut) in str(info.value)


def test_truncated_header(tmp_path):
    path = _write(tmp_path / "full.wav", _stereo())
    cut = tmp_path / "header.wav"
    cut.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="header.wav"):
        load_clip(cut)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        load_clip(tmp_path / "nothere.wav")


def test_wrong_rate_and_resampling(tmp_path):
    t = np.arange(22050) / 22050.0
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    path = _write(tmp_path / "rate.wav", np.stack([tone, tone], axis=1), rate=22050)
    with pytest.raises(ValueError, match="22050 Hz") as info:
        load_clip(path)
    assert str(path) in str(info.value)
    audio = load_clip(path, resample=True, seconds=None)
    assert audio.shape == (2, 16000) and audio.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(audio[0]))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins over one second


def test_mono(tmp_path):
    path = _write(tmp_path / "mono.wav", _stereo()[:, 0])
    with pytest.raises(ValueError, match="mono") as info:
        load_clip(path)
    assert str(path) in str(info.value)
    with pytest.warns(AudioWarning, match="mono"):
        audio = load_clip(path, channels=1, seconds=None)
    assert audio.shape == (1, 16000)


def test_three_channels(tmp_path):
    path = _write(tmp_path / "three.wav", np.zeros((100, 3)) + 0.1)
    with pytest.raises(ValueError, match="3 channels"):
        load_clip(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(tmp_path, bad):
    frames = _stereo().astype(np.float32)
    frames[500, 1] = bad
    path = _write(tmp_path / "nan.wav", frames, subtype="FLOAT")
    with pytest.raises(ValueError, match="NaN or inf .*channel 1, sample 500") as info:
        load_clip(path)
    assert str(path) in str(info.value)


def test_all_zero_warns(tmp_path):
    path = _write(tmp_path / "silent.wav", np.zeros((16000, 2)))
    with pytest.warns(AudioWarning, match="silent.wav"):
        audio = load_clip(path, seconds=None)
    assert not audio.any()


def test_inconsistent_lengths_in_a_batch(tmp_path):
    a = _write(tmp_path / "a.wav", _stereo(16000))
    b = _write(tmp_path / "b.wav", _stereo(12000))
    with pytest.raises(ValueError, match="same length") as info:
        load_clips([a, b])
    assert "b.wav" in str(info.value) and "a.wav" in str(info.value)
    batch = load_clips([a, b], seconds=1.0, pad=True, same_length=False)
    assert batch.shape == (2, 2, 16000) and not batch[1, :, 12000:].any()
    with pytest.raises(ValueError, match="pad=True"):
        load_clips([a, b], seconds=1.0, same_length=False)


def test_bad_arguments(tmp_path):
    path = _write(tmp_path / "a.wav", _stereo())
    with pytest.raises(ValueError, match="channels"):
        load_clip(path, channels=3)
    with pytest.raises(ValueError, match="seconds"):
        load_clip(path, seconds=0)
    with pytest.raises(ValueError, match="pad"):
        load_clip(path, pad=True)
    with pytest.raises(ValueError, match="paths"):
        load_clips([])


def test_pcm16_is_read_bit_identical_to_libsndfile_float(tmp_path):
    """16-bit PCM is read as int16 and scaled by 2**-15 (faster); the values must equal libsndfile's own float read."""
    import soundfile as sf

    from asdx.data.audio import load_clip

    rng = np.random.default_rng(0)
    samples = rng.integers(-32768, 32767, size=(4000, 2), dtype=np.int16)
    samples[:2] = [[-32768, 32767], [0, 1]]  # the extremes and the smallest step
    path = tmp_path / "pcm16.wav"
    sf.write(str(path), samples, 16000, subtype="PCM_16")
    expected = sf.read(str(path), dtype="float32", always_2d=True)[0].T
    np.testing.assert_array_equal(load_clip(path, channels=2), expected)
    np.testing.assert_array_equal(load_clip(path, channels=1), expected[:1])


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT", "PCM_24"])
def test_all_zero_is_judged_on_the_kept_channels(tmp_path, subtype):
    """A silent near channel warns for a channel-0 load even when the far channel is not silent, and not for a
    stereo load; a clip with sound in either kept channel never warns (the check runs on the decoded samples)."""
    frames = _stereo()
    frames[:, 0] = 0.0
    path = _write(tmp_path / "near_silent.wav", frames, subtype=subtype)
    with pytest.warns(AudioWarning, match="near_silent.wav: the clip is all zeros"):
        load_clip(path, channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        load_clip(path, channels=2)
        frames = np.zeros((16000, 2))
        frames[15999, 0] = -1 / 32768  # one quiet sample at the very end is sound
        load_clip(_write(tmp_path / "one_sample.wav", frames, subtype=subtype), channels=1)


def test_non_finite_in_the_near_channel_of_a_channel0_load(tmp_path):
    frames = _stereo().astype(np.float32)
    frames[123, 0] = np.nan
    path = _write(tmp_path / "near_nan.wav", frames, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"near_nan.wav: contains NaN or inf \(first at channel 0, sample 123\)"):
        load_clip(path, channels=1)


@pytest.mark.parametrize("subtype", ["PCM_24", "DOUBLE"])
def test_other_sample_formats_are_read_as_libsndfile_reads_them(tmp_path, subtype):
    frames = _stereo(3000, seed=4)
    path = _write(tmp_path / "other.wav", frames, subtype=subtype)
    expected = sf.read(str(path), dtype="float32", always_2d=True)[0].T
    np.testing.assert_array_equal(load_clip(path, channels=2), expected)
    np.testing.assert_array_equal(load_clip(path, channels=1), expected[:1])
