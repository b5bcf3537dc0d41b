"""NumPy references for the frontend kernels (asdx.features).

Each follows its source step by step: the official DCASE AE baseline
(librosa melspectrogram), Kaldi/torchaudio fbank as BEATs uses it, and the
spatial cues (ILD, IPD, mid/side, GCC-PHAT of Knapp & Carter 1976). Inputs are
(batch, channels, samples); outputs use the same layouts as the kernels.
"""

from __future__ import annotations

import numpy as np

DCASE_LOG_FLOOR = 2.220446049250313e-16
KALDI_LOG_FLOOR = float(np.finfo(np.float32).eps)
ILD_FLOOR = 1e-10
PHASE_FLOOR = 1e-20
PHAT_FLOOR = 1e-20
BEATS_MEAN = 15.41663
BEATS_STD = 6.55582


def _hz_to_slaney_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    logarithmic = min_log_hz / f_sp + np.log(np.maximum(hz, 1e-300) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, logarithmic, linear)


def _slaney_mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):
    """(n_mels, n_fft//2+1) Slaney-scale, Slaney-normalised triangles (librosa defaults)."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    mels = np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2)
    edges = _slaney_mel_to_hz(mels)
    lower = (fft_freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - fft_freqs[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def kaldi_mel_filterbank(sample_rate, padded_length, n_mels, low_freq=20.0, high_freq=0.0):
    """(n_mels, padded_length//2+1) Kaldi mel triangles; the Nyquist column is zero."""
    if high_freq <= 0.0:
        high_freq += sample_rate / 2.0

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    delta = (mel(high_freq) - mel(low_freq)) / (n_mels + 1)
    left = mel(low_freq) + np.arange(n_mels)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    bin_mels = mel(np.arange(padded_length // 2) * sample_rate / padded_length)[None, :]
    weights = np.maximum(0.0, np.minimum((bin_mels - left) / (center - left), (right - bin_mels) / (right - center)))
    return np.concatenate([weights, np.zeros((n_mels, 1))], axis=1)


def _centred_frames(signals, n_fft, hop):
    """(..., frames, n_fft) with librosa's center=True zero padding."""
    padded = np.pad(signals, [(0, 0)] * (signals.ndim - 1) + [(n_fft // 2, n_fft // 2)])
    frames = 1 + signals.shape[-1] // hop
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)
    return windows[..., ::hop, :][..., :frames, :]


def _periodic_hann(n):
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_centred(signals, n_fft, hop):
    """(..., frames, n_fft//2+1) complex STFT, periodic Hann, centred zero-padded frames."""
    return np.fft.rfft(_centred_frames(signals.astype(np.float64), n_fft, hop) * _periodic_hann(n_fft), axis=-1)


def logmel_dcase(waveform, sample_rate=16000, n_fft=1024, hop_length=512, n_mels=128, fmin=0.0, fmax=None):
    """(B, C, frames, n_mels) dB as the official AE baseline: 10 log10(max(mel power, eps))."""
    power = np.abs(stft_centred(np.asarray(waveform), n_fft, hop_length)) ** 2
    mel = power @ slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
    return 10.0 * np.log10(np.maximum(mel, DCASE_LOG_FLOOR))


def kaldi_fbank(waveform, normalise=False, sample_rate=16000, n_mels=128, frame_length=400, frame_shift=160,
                low_freq=20.0, high_freq=0.0, preemphasis=0.97):
    """(B, C, frames, n_mels) natural-log Kaldi fbank of waveform * 2**15 (snip_edges, Povey window)."""
    signals = np.asarray(waveform, dtype=np.float64) * 32768.0
    n_frames = 0 if signals.shape[-1] < frame_length else 1 + (signals.shape[-1] - frame_length) // frame_shift
    padded_length = 1 << int(np.ceil(np.log2(frame_length)))
    if n_frames == 0:
        return np.zeros(signals.shape[:-1] + (0, n_mels))
    frames = np.lib.stride_tricks.sliding_window_view(signals, frame_length, axis=-1)[..., ::frame_shift, :][
        ..., :n_frames, :
    ]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    previous = np.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - preemphasis * previous
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(frame_length) / (frame_length - 1))) ** 0.85
    power = np.abs(np.fft.rfft(frames * window, n=padded_length, axis=-1)) ** 2
    bank = kaldi_mel_filterbank(sample_rate, padded_length, n_mels, low_freq, high_freq)
    log_energy = np.log(np.maximum(power @ bank.T, KALDI_LOG_FLOOR))
    if normalise:
        log_energy = (log_energy - BEATS_MEAN) / (2.0 * BEATS_STD)
    return log_energy


def gcc_phat_correlation(waveform, n_fft=1024, hop_length=512):
    """(B, frames, n_fft) PHAT cross-correlation r[lag mod n_fft]; peak at +d when far lags near by d."""
    spectra = stft_centred(np.asarray(waveform), n_fft, hop_length)
    near, far = spectra[:, 0], spectra[:, 1]
    cross = near * np.conj(far)
    phat = np.conj(cross) / (np.abs(cross) + PHAT_FLOOR)
    return np.fft.irfft(phat, n=n_fft, axis=-1)


def stereo_features(waveform, sample_rate=16000, n_fft=1024, hop_length=512, n_mels=128, fmin=0.0, fmax=None,
                    max_lag=320):
    """Returns (bands, ipd, gcc) in the layouts of asdx.features.stereo_features."""
    waveform = np.asarray(waveform, dtype=np.float64)
    spectra = stft_centred(waveform, n_fft, hop_length)
    near, far = spectra[:, 0], spectra[:, 1]
    bank = slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T

    def db(power):
        return 10.0 * np.log10(np.maximum(power @ bank, DCASE_LOG_FLOOR))

    def phasor(z):
        magnitude = np.abs(z)
        safe = np.where(magnitude > PHASE_FLOOR, magnitude, 1.0)
        return (np.where(magnitude > PHASE_FLOOR, z.real / safe, 1.0), np.where(magnitude > PHASE_FLOOR, z.imag / safe, 0.0))

    near_power, far_power = np.abs(near) ** 2, np.abs(far) ** 2
    cross = near * np.conj(far)
    band_cross = cross @ bank
    band_cos, band_sin = phasor(band_cross)
    ild = 10.0 * np.log10((near_power @ bank + ILD_FLOOR) / (far_power @ bank + ILD_FLOOR))
    mid = np.abs(near + far) ** 2 / 2.0
    side = np.abs(near - far) ** 2 / 2.0
    bands = np.stack([db(near_power), db(far_power), ild, band_cos, band_sin, db(mid), db(side)], axis=1)
    ipd = np.stack(phasor(cross), axis=1)

    correlation = gcc_phat_correlation(waveform, n_fft, hop_length)
    max_lag = min(max_lag, n_fft // 2 - 1)
    lags = np.arange(-max_lag, max_lag + 1)
    values = correlation[..., lags % n_fft]
    # Same order as the kernel: highest value, then smallest |lag|, then the negative lag.
    order = np.lexsort((lags, np.abs(lags)))
    best = order[np.argmax(values[..., order], axis=-1)]
    gcc = np.stack([lags[best].astype(np.float64), np.take_along_axis(values, best[..., None], -1)[..., 0]], axis=-1)
    return bands, ipd, gcc
