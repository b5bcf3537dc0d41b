"""NumPy reference of the near/far residual (view "w1"): near minus what the far channel predicts.

The published recipe (kasahart/asd-experiments, docs/02-protocol.md), per clip and on both
channels together:

1. scale both channels by one factor so that the larger peak is 0.9 (factor 1 when the peak
   is <= 1e-12);
2. STFT: periodic Hann, n_fft = window = 1024, hop 512, centred with reflect padding,
   unnormalised, one-sided;
3. per frequency bin, over all frames: H = sum C conj(F) / (sum |F|^2 + 1e-12), C near, F far;
4. Y = C - H F; inverse STFT with the same window (weighted overlap-add divided by the summed
   squared window, as torch.istft and librosa.istft), cut to the original length; undo the scale.

Written step by step for clarity. The recipe works in float32; this oracle computes in float64
from the float32 input (so it is the exact value a float32 kernel approximates) and returns
float32. Reflect padding needs more than n_fft // 2 = 512 samples: shorter clips raise.
"""

from __future__ import annotations

import numpy as np

N_FFT = 1024
HOP = 512
PEAK = 0.9
PEAK_FLOOR = 1e-12
H_FLOOR = 1e-12


def hann_periodic(n: int = N_FFT) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def stft(x: np.ndarray) -> np.ndarray:
    """(..., samples) -> (..., frames, N_FFT // 2 + 1) complex; frames = 1 + samples // HOP."""
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(N_FFT // 2, N_FFT // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[..., ::HOP, :]
    return np.fft.rfft(frames * hann_periodic(), axis=-1)


def istft(spectrum: np.ndarray, length: int) -> np.ndarray:
    """Inverse of stft: overlap-add of windowed frames / summed squared window, centre cut to `length`."""
    window = hann_periodic()
    frames = np.fft.irfft(spectrum, N_FFT, axis=-1) * window
    n_frames = spectrum.shape[-2]
    total = N_FFT + HOP * (n_frames - 1)
    out = np.zeros(spectrum.shape[:-2] + (total,))
    norm = np.zeros(total)
    for t in range(n_frames):
        out[..., t * HOP:t * HOP + N_FFT] += frames[..., t, :]
        norm[t * HOP:t * HOP + N_FFT] += window**2
    start = N_FFT // 2
    return out[..., start:start + length] / norm[start:start + length]


def w1_residual(audio: np.ndarray) -> np.ndarray:
    """(clips, 2, samples) float32 (channel 0 near, 1 far) -> (clips, samples) float32 residual."""
    audio = np.asarray(audio)
    if audio.ndim != 3 or audio.shape[1] != 2:
        raise ValueError(f"audio: expected (clips, 2, samples) with channel 0 near and 1 far, got {audio.shape}.")
    if audio.shape[-1] <= N_FFT // 2:
        raise ValueError(f"audio: {audio.shape[-1]} samples; the centred STFT's reflect padding needs more than "
                         f"{N_FFT // 2}.")
    x = audio.astype(np.float32).astype(np.float64)
    peak = np.max(np.abs(x), axis=(1, 2))
    scale = np.where(peak > PEAK_FLOOR, PEAK / np.where(peak > PEAK_FLOOR, peak, 1.0), 1.0)[:, None, None]
    spectra = stft(x * scale)
    near, far = spectra[:, 0], spectra[:, 1]
    transfer = np.sum(near * np.conj(far), axis=1) / (np.sum(np.abs(far) ** 2, axis=1) + H_FLOOR)
    residual = near - transfer[:, None, :] * far
    return (istft(residual, audio.shape[-1]) / scale[:, 0]).astype(np.float32)
