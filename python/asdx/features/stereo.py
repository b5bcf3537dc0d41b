"""The P_proto spatial frontend: per-channel log-mel plus inter-channel cues."""

from __future__ import annotations

from typing import NamedTuple

from asdx._arrays import prepare_waveform
from asdx import torch_kernels
from asdx._native import _C
from asdx.features._launch import check_precision, run_frontend

BAND_CHANNELS = ("near_logmel", "far_logmel", "ild", "ipd_cos", "ipd_sin", "mid_logmel", "side_logmel")


class StereoFeatures(NamedTuple):
    """Outputs of stereo_features, float32, in the input's kind and device.

    bands: (batch, 7, frames, n_mels), channels in BAND_CHANNELS order:
        0 near_logmel, 1 far_logmel: 10 log10(max(mel power, 2.2e-16)) dB, as logmel_dcase;
        2 ild: 10 log10((P_near + 1e-10) / (P_far + 1e-10)) per mel band, dB;
        3 ipd_cos, 4 ipd_sin: the band-pooled IPD, i.e. the unit phasor of the
          mel-weighted sum of X_near conj(X_far) (magnitude-weighted, no wrapping);
        5 mid_logmel, 6 side_logmel: log-mel of (near + far)/sqrt 2 and (near - far)/sqrt 2.
    ipd: (batch, 2, frames, n_fft // 2 + 1): cos and sin of angle(X_near conj(X_far)) per
        FFT bin; (1, 0) where the cross-spectrum is zero.
    gcc: (batch, frames, 2): per-frame GCC-PHAT peak lag in samples within
        [-max_lag, max_lag] (positive: the far channel lags the near one) and the
        peak height (1 for a perfectly coherent delayed copy, ~0 for unrelated noise).
    """

    bands: object
    ipd: object
    gcc: object


def stereo_features(waveform, *, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 512,
                    n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None,
                    max_lag: int = 320, precision: str = "float64",
                    check_finite: bool | None = None) -> StereoFeatures:
    """Spatial cues (ILD, IPD, mid/side, GCC-PHAT: Knapp & Carter 1976) for near/far stereo clips, one FFT per frame.

    Frames are centred and zero padded with a periodic Hann window, as in
    logmel_dcase, so bands[:, 0] equals logmel_dcase of the near channel.
    waveform: (batch, 2, samples), channel 0 near, channel 1 far.
    max_lag (samples) bounds the GCC-PHAT search; the default ±320 is ±20 ms at
    16 kHz, for microphones whose spacing is unknown. It is clipped to n_fft/2 - 1.
    precision and check_finite: as in logmel_dcase. Not differentiable.
    """
    if max_lag < 0:
        raise ValueError(f"max_lag: must be >= 0, got {max_lag}.")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    float32 = check_precision(precision)
    wave = prepare_waveform(waveform, channels=2, check_finite=check_finite)
    batch, _, n_samples = wave.shape
    frames = 1 + n_samples // hop_length
    params = (sample_rate, n_fft, hop_length, n_mels, float(fmin), fmax, int(max_lag), float32)
    bands, ipd, gcc = run_frontend(
        wave,
        "stereo_features",
        [(batch, len(BAND_CHANNELS), frames, n_mels), (batch, 2, frames, n_fft // 2 + 1), (batch, frames, 2)],
        lambda data: _C.stereo_features_cpu(data, *params),
        lambda src, b, i, g, tables, offsets, stream: _C.stereo_features_cuda(src, batch, n_samples, b, i, g, tables,
                                                                              offsets, stream, *params),
        ("logmel", (sample_rate, n_fft, hop_length, n_mels, float(fmin), fmax, float32)),
        lambda x: torch_kernels.stereo_features(x, *params),
    )
    return StereoFeatures(bands, ipd, gcc)
