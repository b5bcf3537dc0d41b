"""The NumPy reference of the near/far residual (view "w1"): against torch.stft/istft, and its properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from asdx.reference.stereo_view import N_FFT, w1_residual


def _torch_w1(audio: np.ndarray, dtype=torch.float64) -> np.ndarray:
    """The published recipe written with torch.stft/torch.istft (as kasahart/asd-experiments does)."""
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32)).to(dtype)
    peak = x.abs().amax(dim=(1, 2), keepdim=True)
    scale = torch.where(peak > 1e-12, 0.9 / torch.where(peak > 1e-12, peak, torch.ones_like(peak)),
                        torch.ones_like(peak))
    x = x * scale
    window = torch.hann_window(N_FFT, periodic=True, dtype=dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), N_FFT, hop_length=512, win_length=N_FFT, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = spec.reshape(x.shape[0], 2, *spec.shape[1:])  # (clips, 2, freq, frames)
    near, far = spec[:, 0], spec[:, 1]
    transfer = (near * far.conj()).sum(-1) / ((far.abs() ** 2).sum(-1) + 1e-12)
    residual = near - transfer[..., None] * far
    y = torch.istft(residual, N_FFT, hop_length=512, win_length=N_FFT, window=window, center=True,
                    normalized=False, onesided=True, length=x.shape[-1])
    return (y / scale[:, 0]).numpy()


def _stereo(kind: str, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000
    near = rng.standard_normal((3, length))
    if kind == "noise":
        far = 0.5 * np.roll(near, 17, axis=-1) + 0.3 * rng.standard_normal((3, length))
    elif kind == "sine":
        near = np.sin(2 * np.pi * rng.uniform(50, 7900, (3, 1)) * t)
        far = 0.7 * np.sin(2 * np.pi * rng.uniform(50, 7900, (3, 1)) * t) + 0.2 * near
    elif kind == "impulse":
        near, far = np.zeros((3, length)), np.zeros((3, length))
        near[:, length // 3] = 1.0
        far[:, length // 2] = -0.5
    elif kind == "loud":  # peaks above 1: the joint scale is undone
        far = 40.0 * rng.standard_normal((3, length))
        near = 100.0 * near
    else:
        raise ValueError(kind)
    return np.stack([near, far], axis=1).astype(np.float32)


@pytest.mark.parametrize("kind", ["noise", "sine", "impulse", "loud"])
@pytest.mark.parametrize("length", [513, 1000, 1024, 1537, 16000])
def test_matches_torch_stft_istft(kind, length):
    audio = _stereo(kind, length, seed=length)
    ours = w1_residual(audio)
    assert ours.dtype == np.float32 and ours.shape == (3, length)
    # Both in float64 from the same float32 input: measured 3e-8 of the near peak, 8e-7 where the clip ends
    # just before a frame boundary (length 1000: the last samples lie under one window's tail only, and the
    # inverse divides by a squared window down to 1e-5, which magnifies the float32 rounding of the output).
    expected = _torch_w1(audio)
    scale = np.max(np.abs(audio[:, 0]), axis=-1, keepdims=True) + 1e-30
    np.testing.assert_allclose(ours / scale, expected / scale, rtol=0, atol=1e-5)
    # torch in float32, as the recipe runs: measured 1e-6 of the peak, 1e-4 at those ends (same magnification)
    np.testing.assert_allclose(ours / scale, _torch_w1(audio, torch.float32) / scale, rtol=0, atol=1e-3)


def _relative_energy(residual: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.sum(residual.astype(np.float64) ** 2, -1) / np.sum(reference.astype(np.float64) ** 2, -1)


@pytest.mark.parametrize("taps, weights, tolerance", [
    ([4, 6, 9], [0.6, -0.2, 0.1], 1e-3),  # measured 0.7e-4 to 1.4e-4
    ([20, 27, 33, 40], [0.6, -0.2, 0.1, 0.05], 3e-3),  # measured 1.3e-3
])
def test_far_a_linear_filter_of_near_leaves_almost_nothing(taps, weights, tolerance):
    """far = a short FIR of near (a delay and weaker echoes: no zero on the unit circle). Per bin, near is
    then 1/h times far, up to the part of each frame that the filter moves across the frame's edge: a
    relative energy of about (filter length / n_fft)^2, 0.8e-4 for 9 samples and 1.5e-3 for 40 (10 s clips).
    The tolerances are about twice that; a wrong H (conj on the wrong side, per-frame H) gives order 1."""
    rng = np.random.default_rng(1)
    near = rng.standard_normal((2, 160000))
    fir = np.zeros(max(taps) + 1)
    fir[taps] = weights
    far = lfilter(fir, [1.0], near, axis=-1)
    audio = np.stack([near, far], axis=1).astype(np.float32)
    assert np.all(_relative_energy(w1_residual(audio), audio[:, 0]) < tolerance)


def test_independent_far_leaves_near_unchanged():
    """With far independent of near, the estimated H is noise of size 1/sqrt(frames) per bin, so the
    residual differs from near by about 1/frames of its energy (313 frames for 10 s: 0.3 %, measured 0.26 to
    0.27 %); 1 % allows for the spread over seeds; removing far entirely would give 100 %."""
    rng = np.random.default_rng(2)
    audio = rng.standard_normal((3, 2, 160000)).astype(np.float32)
    residual = w1_residual(audio)
    assert np.all(_relative_energy(residual - audio[:, 0], audio[:, 0]) < 0.01)


def test_silence_gives_zeros_and_scale_is_undone():
    audio = np.zeros((2, 2, 4000), np.float32)
    audio[1] = _stereo("noise", 4000)[0]
    residual = w1_residual(audio)
    assert np.all(residual[0] == 0.0)  # factor 1, H = 0: exactly zero
    # joint scaling: the residual of k x is k times the residual of x
    np.testing.assert_allclose(w1_residual(audio * 1e-3)[1], 1e-3 * residual[1], rtol=0,
                               atol=1e-6 * np.abs(residual[1]).max())


def test_short_clips():
    """Reflect padding needs more than n_fft // 2 = 512 samples: 513 works, 512 raises a clear error."""
    assert w1_residual(_stereo("noise", 513)).shape == (3, 513)
    with pytest.raises(ValueError, match="more than 512"):
        w1_residual(np.zeros((1, 2, 512), np.float32))
    with pytest.raises(ValueError, match=r"\(clips, 2, samples\)"):
        w1_residual(np.zeros((1, 3, 4000), np.float32))
