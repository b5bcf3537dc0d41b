"""Kaldi-compatible log-mel filterbank: the BEATs input."""

from __future__ import annotations

from asdx._arrays import prepare_waveform
from asdx import torch_kernels
from asdx._native import _C
from asdx.features._launch import check_precision, run_frontend

BEATS_MEAN = 15.41663
BEATS_STD = 6.55582


def kaldi_fbank(waveform, *, normalise: bool = False, sample_rate: int = 16000, n_mels: int = 128,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, low_freq: float = 20.0,
                high_freq: float = 0.0, preemphasis: float = 0.97, precision: str = "float64",
                check_finite: bool | None = None):
    """torchaudio.compliance.kaldi.fbank as BEATs calls it (BEATs.preprocess, microsoft/unilm beats/BEATs.py).

    The waveform (in [-1, 1]) is scaled by 2**15 first. Per frame: DC removal,
    pre-emphasis 0.97, Povey window, zero padding to the next power of two
    (512), power spectrum, Kaldi mel triangles from low_freq to Nyquist
    (high_freq <= 0 means Nyquist + high_freq), natural log floored at float32
    eps. No dither, snip_edges: frames = 1 + (samples - 400) // 160, 0 if the
    clip is shorter than one frame.

    normalise=True applies the BEATs normalisation (x - 15.41663) / (2 * 6.55582).
    Returns float32 (batch, channels, frames, n_mels) in the input's kind and device.
    Not differentiable (a tensor that requires grad is refused).

    precision: the FFT's precision, "float64" (default, matches torchaudio's fixtures to
    1e-3) or "float32" (within 0.01 on bands within 80 dB of each frame's peak; torchaudio
    itself computes in float32). check_finite: as in logmel_dcase.
    """
    frame_length = int(round(sample_rate * frame_length_ms / 1000.0))
    frame_shift = int(round(sample_rate * frame_shift_ms / 1000.0))
    float32 = check_precision(precision)
    wave = prepare_waveform(waveform, check_finite=check_finite)
    batch, channels, n_samples = wave.shape
    frames = 0 if n_samples < frame_length else 1 + (n_samples - frame_length) // frame_shift
    params = (sample_rate, frame_length, frame_shift, n_mels, float(low_freq), float(high_freq), float(preemphasis),
              bool(normalise), float32)
    (out,) = run_frontend(
        wave,
        "kaldi_fbank",
        [(batch, channels, frames, n_mels)],
        lambda data: [_C.kaldi_fbank_cpu(data.reshape(batch * channels, n_samples), *params)],
        lambda src, dst, tables, offsets, stream: _C.kaldi_fbank_cuda(src, batch * channels, n_samples, dst, tables,
                                                                      offsets, stream, *params),
        ("kaldi", params),
        lambda x: [torch_kernels.kaldi_fbank(x, *params)],
    )
    return out
