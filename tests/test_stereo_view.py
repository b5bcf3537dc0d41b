"""asdx.features.stereo_view: the native w1 kernel (CPU, and the CUDA schedule run on the host) and its torch
implementation against the NumPy reference, a scipy STFT round trip, the residual's properties, the other views
and the input checks. CUDA itself: tests/test_stereo_view_cuda.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal as scipy_signal

from asdx import kernels
from asdx._native import _C
from asdx.features import VIEWS, stereo_view
from asdx.reference.stereo_view import HOP, N_FFT, hann_periodic, w1_residual
from asdx.torch_kernels import stereo_view_w1


def _envelope(length: int) -> np.ndarray:
    """The summed squared window under each output sample (what the inverse divides by)."""
    frames = 1 + length // HOP
    total = np.zeros(N_FFT + HOP * (frames - 1))
    for t in range(frames):
        total[t * HOP:t * HOP + N_FFT] += hann_periodic() ** 2
    return total[N_FFT // 2:N_FFT // 2 + length]


def _assert_float32_close(out: np.ndarray, expected: np.ndarray, audio: np.ndarray, weight: float = 0.5):
    """float32 precision, per clip, relative to the clip's joint peak. The inverse divides each sample by the
    summed squared window, down to 1e-9 in the last samples of some lengths: a float32 frame's rounding (1e-7)
    grows by 1 / window there. So the error is weighted by envelope**weight: 0.5 (1 / window) for the native
    kernels (measured max 5.2e-7 of the peak on the adversarial cases), 1 for torch.istft, whose envelope is
    float32 (measured 5e-7). A wrong bin, H or window gives errors of order 1e-2 and more."""
    assert out.dtype == np.float32 and out.shape == expected.shape
    envelope = _envelope(audio.shape[-1]) ** weight
    peak = np.abs(audio).max(axis=(1, 2))[:, None]
    error = np.abs(out.astype(np.float64) - expected) * envelope
    assert np.all(error <= 2e-6 * np.where(peak > 0, peak, 1.0)), float(np.max(error / np.maximum(peak, 1e-300)))


def _native(audio):
    return _C.stereo_view_w1_cpu(audio)


def _radix2(audio):
    return _C._stereo_view_w1_radix2_host(audio)


def _torch(audio):
    return stereo_view_w1(torch.from_numpy(audio)).numpy()


IMPLEMENTATIONS = {"native": (_native, 0.5), "cuda-schedule-on-host": (_radix2, 0.5), "torch": (_torch, 1.0)}


def _adversarial(kind: str, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(length), rng.standard_normal(length)
    pair = {
        "related": [a, 0.5 * np.roll(a, 5) + 0.1 * b],
        "silence": [0 * a, 0 * a],
        "silent far": [a, 0 * a],
        "silent near": [0 * a, a],
        "huge": [1e30 * a, 1e30 * b],
        "below the peak floor": [1e-20 * a, 1e-20 * b],
        "small": [1e-10 * a, 3e-11 * b],
        "dc": [np.full(length, 0.7), np.full(length, -0.3)],
        "clipping": [np.sign(a), np.clip(3 * b, -1, 1)],
        "impulses": [np.eye(1, length, length // 3)[0], -0.5 * np.eye(1, length, length // 2)[0]],
    }[kind]
    return np.stack(pair)[None].astype(np.float32)


ADVERSARIAL = ["related", "silence", "silent far", "silent near", "huge", "below the peak floor", "small", "dc",
               "clipping", "impulses"]


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", ADVERSARIAL)
@pytest.mark.parametrize("length", [513, 1000, 1535, 16001])
def test_adversarial_inputs_match_the_reference(name, kind, length):
    fn, weight = IMPLEMENTATIONS[name]
    audio = _adversarial(kind, length, seed=length)
    out = fn(audio)
    assert np.all(np.isfinite(out))
    _assert_float32_close(out, w1_residual(audio).astype(np.float64), audio, weight)
    if kind in ("silence", "silent near"):
        assert np.all(out == 0.0)  # C = 0 exactly, so H = 0 and Y = 0


_clips = st.integers(1, 3)
_lengths = st.integers(513, 6000)


@settings(max_examples=30, deadline=None)
@given(clips=_clips, length=_lengths, seed=st.integers(0, 2**31 - 1), log_gain=st.floats(-6, 6),
       coupling=st.floats(-2, 2), delay=st.integers(-40, 40))
def test_random_stereo_matches_the_reference(clips, length, seed, log_gain, coupling, delay):
    rng = np.random.default_rng(seed)
    near = rng.standard_normal((clips, length)) * 10.0 ** log_gain
    far = coupling * np.roll(near, delay, axis=-1) + rng.uniform(0, 1) * near.std() * rng.standard_normal(near.shape)
    audio = np.stack([near, far], axis=1).astype(np.float32)
    expected = w1_residual(audio).astype(np.float64)
    for name, (fn, weight) in IMPLEMENTATIONS.items():
        _assert_float32_close(fn(audio), expected, audio, weight)


def _scipy_w1(audio: np.ndarray) -> np.ndarray:
    """The recipe with scipy.signal.stft/istft (its boundary="even" is numpy's reflect padding; its own
    1/sum(window) scaling cancels in H and in the round trip), in float64."""
    x = audio.astype(np.float64)
    peak = np.abs(x).max(axis=(1, 2), keepdims=True)
    scale = np.where(peak > 1e-12, 0.9 / np.where(peak > 1e-12, peak, 1.0), 1.0)
    kwargs = dict(fs=1.0, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP)
    _, _, spec = scipy_signal.stft(x * scale, boundary="even", padded=False, **kwargs)  # (clips, 2, bins, frames)
    near, far = spec[:, 0], spec[:, 1]
    transfer = (near * far.conj()).sum(-1) / ((np.abs(far) ** 2).sum(-1) + 1e-12 * (1.0 / hann_periodic().sum()) ** 2)
    with warnings.catch_warnings():  # NOLA fails at padded position 0 only, which the centre cut drops
        warnings.simplefilter("ignore", UserWarning)
        _, y = scipy_signal.istft(near - transfer[..., None] * far, boundary=False, **kwargs)
    return y[..., N_FFT // 2:N_FFT // 2 + audio.shape[-1]] / scale[:, 0]  # the centre cut


@pytest.mark.parametrize("length", [2000, 16000])
def test_matches_a_scipy_stft_round_trip(length):
    rng = np.random.default_rng(length)
    near = rng.standard_normal((2, length))
    far = np.stack([scipy_signal.lfilter([0.0, 0.4, -0.2], [1.0], near[0]), rng.standard_normal(length)])
    audio = np.stack([near, 0.6 * far + 0.2 * rng.standard_normal((2, length))], axis=1).astype(np.float32)
    _assert_float32_close(stereo_view(audio), _scipy_w1(audio), audio)


def _relative_energy(residual, reference):
    return np.sum(np.square(residual, dtype=np.float64), -1) / np.sum(np.square(reference, dtype=np.float64), -1)


def test_far_a_linear_filter_of_near_leaves_almost_nothing():
    """As the reference's test: a 9-sample FIR leaves (9 / 1024)^2 ~ 1e-4 of the energy (frame edges)."""
    rng = np.random.default_rng(1)
    near = rng.standard_normal((2, 160000))
    far = scipy_signal.lfilter([0, 0, 0, 0, 0.6, 0, -0.2, 0, 0, 0.1], [1.0], near, axis=-1)
    audio = np.stack([near, far], axis=1).astype(np.float32)
    assert np.all(_relative_energy(stereo_view(audio), audio[:, 0]) < 1e-3)


def test_independent_far_leaves_near_unchanged():
    """An independent far: H is noise of size 1/sqrt(frames), about 1/frames = 0.3 % of the energy changes."""
    audio = np.random.default_rng(2).standard_normal((3, 2, 160000)).astype(np.float32)
    assert np.all(_relative_energy(stereo_view(audio) - audio[:, 0], audio[:, 0]) < 0.01)


def test_joint_scale_is_undone():
    audio = _adversarial("related", 4000)
    out = stereo_view(audio)
    for gain in (1e-3, 1e3):
        np.testing.assert_allclose(stereo_view(audio * np.float32(gain)), gain * out, rtol=0,
                                   atol=1e-5 * gain * np.abs(out).max())


def test_short_clips():
    assert stereo_view(_adversarial("related", 513)).shape == (1, 513)
    with pytest.raises(ValueError, match=r"audio: 512 samples.*more than 512"):
        stereo_view(np.zeros((1, 2, 512), np.float32))
    # the single-channel views have no minimum
    np.testing.assert_array_equal(stereo_view(np.ones((1, 2, 3), np.float32), "far"), np.ones((1, 3), np.float32))


def test_the_other_views_and_the_kinds():
    audio = np.random.default_rng(3).standard_normal((2, 2, 1200)).astype(np.float32)
    expected = {"near": audio[:, 0], "far": audio[:, 1], "mid": (audio[:, 0] + audio[:, 1]) / 2,
                "w1": stereo_view(audio)}
    assert set(expected) == set(VIEWS)
    for view, want in expected.items():
        out = stereo_view(audio, view)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-7)
        tensor = stereo_view(torch.from_numpy(audio), view=view)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32 and tensor.shape == (2, 1200)
        np.testing.assert_allclose(tensor.numpy(), want, rtol=0, atol=1e-7)
    # float64 input is read as float32
    np.testing.assert_allclose(stereo_view(audio.astype(np.float64)), expected["w1"], rtol=0, atol=0)


def test_torch_kernels_choice_runs_the_torch_implementation(monkeypatch):
    audio = _adversarial("related", 3000)
    monkeypatch.setattr(_C, "stereo_view_w1_cpu", None, raising=True)  # the native path would fail
    kernels.set_kernels("torch")
    try:
        out = stereo_view(audio)
    finally:
        kernels.set_kernels(None)
    _assert_float32_close(out, w1_residual(audio).astype(np.float64), audio, 1.0)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 3, 4000), np.float32), r"audio: expected 2 channels"),
    (np.zeros((2, 4000), np.float32), r"audio: expected shape \(batch, channels, samples\)"),
    (np.zeros((1, 2, 4000), np.int16), r"audio: dtype int16"),
])
def test_bad_input_names_the_argument(bad, match):
    with pytest.raises(ValueError, match=match):
        stereo_view(bad)


def test_bad_view_and_non_finite_input():
    audio = np.zeros((2, 2, 2000), np.float32)
    with pytest.raises(ValueError, match=r"view: must be one of near, far, mid, w1, got 'left'"):
        stereo_view(audio, view="left")
    audio[1, 1, 7] = np.nan
    for view in VIEWS:
        with pytest.raises(ValueError, match=r"audio\[1\]: contains NaN or inf"):
            stereo_view(audio, view)
        with pytest.raises(ValueError, match=r"audio\[1\]"):
            stereo_view(torch.from_numpy(audio), view)


def test_no_clips():
    assert stereo_view(np.zeros((0, 2, 1000), np.float32)).shape == (0, 1000)
    assert stereo_view(torch.zeros((0, 2, 1000))).shape == (0, 1000)
