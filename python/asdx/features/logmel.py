"""The official DCASE AE-baseline log-mel and its 5-frame stacking."""

from __future__ import annotations

import numpy as np
import torch

from asdx._arrays import prepare_waveform
from asdx import torch_kernels
from asdx._native import _C
from asdx.features._launch import check_precision, run_frontend


def logmel_dcase(waveform, *, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 512,
                 n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None, precision: str = "float64",
                 check_finite: bool | None = None):
    """Log-mel exactly as the official AE baseline computes it.

    Reference: nttcslab/dcase2023_task2_baseline_ae, datasets/loader_common.py.

    librosa.feature.melspectrogram with a periodic Hann window, centred frames
    with zero padding, power 2, Slaney mel scale and Slaney filter norm, then
    10 * log10(max(mel, 2.220446049250313e-16)).

    waveform: (batch, channels, samples) numpy array or torch tensor.
    Returns float32 (batch, channels, frames, n_mels), frames = 1 + samples // hop_length,
    as numpy or as a torch tensor on the input's device. Not differentiable (a tensor that
    requires grad is refused).

    precision: the FFT's precision. "float64" (default) matches librosa to 1e-4 dB
    down to the 2.2e-16 floor; "float32" (for GPUs with slow double) is within 0.01 dB
    on bands within 80 dB of each frame's peak, coarser below.
    check_finite: None checks host input (ValueError) and CUDA input on the device
    without a host sync (a non-finite clip's output is NaN); True always raises; False skips.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    float32 = check_precision(precision)
    wave = prepare_waveform(waveform, check_finite=check_finite)
    batch, channels, n_samples = wave.shape
    frames = 1 + n_samples // hop_length
    params = (sample_rate, n_fft, hop_length, n_mels, float(fmin), fmax, float32)
    (out,) = run_frontend(
        wave,
        "logmel_dcase",
        [(batch, channels, frames, n_mels)],
        lambda data: [_C.logmel_dcase_cpu(data.reshape(batch * channels, n_samples), *params)],
        lambda src, dst, tables, offsets, stream: _C.logmel_dcase_cuda(src, batch * channels, n_samples, dst, tables,
                                                                       offsets, stream, *params),
        ("logmel", params),
        lambda x: [torch_kernels.logmel_dcase(x, *params)],
    )
    return out


def stack_frames(logmel, n_frames: int = 5):
    """Concatenates n_frames consecutive frames into one vector, hop 1 (as the official AE baseline does).

    logmel: (..., frames, n_mels). Returns (..., frames - n_frames + 1, n_frames * n_mels),
    where vector t holds frame t + k in dims [k * n_mels, (k + 1) * n_mels).
    Clips shorter than n_frames give zero vectors.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames: must be >= 1, got {n_frames}.")
    if logmel.ndim < 2:
        raise ValueError(f"logmel: expected (..., frames, n_mels), got shape {tuple(logmel.shape)}.")
    *lead, frames, n_mels = logmel.shape
    n_vectors = max(frames - n_frames + 1, 0)
    if isinstance(logmel, torch.Tensor):
        if n_vectors == 0:
            return logmel.new_zeros((*lead, 0, n_frames * n_mels))
        windows = logmel.unfold(-2, n_frames, 1)  # (..., vectors, n_mels, n_frames)
        return windows.transpose(-1, -2).reshape(*lead, n_vectors, n_frames * n_mels)
    logmel = np.asarray(logmel)
    if n_vectors == 0:
        return np.zeros((*lead, 0, n_frames * n_mels), dtype=logmel.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(logmel, n_frames, axis=-2)
    return np.ascontiguousarray(np.swapaxes(windows, -1, -2)).reshape(*lead, n_vectors, n_frames * n_mels)
