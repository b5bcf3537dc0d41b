"""The three frontends (asdx.features) in torch: log-mel (DCASE AE baseline), Kaldi fbank (BEATs), stereo cues.

Same layouts, parameters and floors as the native kernels and asdx.reference.frontend; the
filterbanks are the reference's, built once per configuration, device and dtype. float32=False
computes everything in float64 (as the native float64 path computes its FFT), True in float32;
the outputs are float32 either way. Input: a float32 tensor (batch, channels, samples), checked
by asdx._arrays.prepare_waveform. Long batches are cut into chunks to bound the memory of the
framed signal (about 64 MB of frames per chunk).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from asdx.reference.frontend import (
    BEATS_MEAN,
    BEATS_STD,
    DCASE_LOG_FLOOR,
    ILD_FLOOR,
    KALDI_LOG_FLOOR,
    PHASE_FLOOR,
    PHAT_FLOOR,
    kaldi_mel_filterbank,
    slaney_mel_filterbank,
)

__all__ = ["kaldi_fbank", "logmel_dcase", "stereo_features"]

_CHUNK_VALUES = 1 << 23  # framed values per chunk


def _dtype(float32: bool) -> torch.dtype:
    return torch.float32 if float32 else torch.float64


@functools.lru_cache(maxsize=64)
def _tensor(kind: str, params: tuple, device: str, dtype: torch.dtype) -> torch.Tensor:
    """A constant table on the device: filterbanks transposed for `power @ bank`, windows."""
    if kind == "slaney":
        sample_rate, n_fft, n_mels, fmin, fmax = params
        array = slaney_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T
    elif kind == "kaldi":
        sample_rate, padded, n_mels, low, high = params
        array = kaldi_mel_filterbank(sample_rate, padded, n_mels, low, high).T
    elif kind == "hann":  # periodic, as librosa's get_window("hann", n_fft)
        (n,) = params
        array = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    else:  # "povey": Kaldi's window, a symmetric Hann to the power 0.85
        (n,) = params
        array = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))) ** 0.85
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


def _check_logmel(sample_rate: int, n_fft: int, hop: int, n_mels: int, fmin: float, fmax: float) -> None:
    """The native kernels' parameter checks (csrc/bindings.cpp make_logmel), with their messages."""
    if not (n_fft >= 4 and n_fft <= 65536 and n_fft & (n_fft - 1) == 0):
        raise ValueError(f"n_fft must be a power of two in [4, 65536], got {n_fft}")
    if hop < 1:
        raise ValueError("hop_length must be >= 1")
    if n_mels < 1:
        raise ValueError("n_mels must be >= 1")
    if sample_rate <= 0:
        raise ValueError("sample_rate must be > 0")
    if not (0.0 <= fmin < fmax <= sample_rate / 2.0):
        raise ValueError("need 0 <= fmin < fmax <= sample_rate / 2")


def _chunks(signals: torch.Tensor, per_signal: int):
    step = max(1, _CHUNK_VALUES // max(per_signal, 1))
    for start in range(0, signals.shape[0], step):
        yield signals[start:start + step]


def _centred_spectrum(signals: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """(n, frames, n_fft//2+1) complex: centred frames zero padded by n_fft//2 (librosa center=True)."""
    frames = 1 + signals.shape[-1] // hop
    padded = torch.nn.functional.pad(signals, (n_fft // 2, n_fft // 2))
    framed = padded.unfold(-1, n_fft, hop)[:, :frames]
    return torch.fft.rfft(framed * window, dim=-1)


def _power(spectrum: torch.Tensor) -> torch.Tensor:
    return spectrum.real.square() + spectrum.imag.square()


def logmel_dcase(x: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float,
                 fmax: float, float32: bool) -> torch.Tensor:
    """(B, C, frames, n_mels) float32 dB: 10 log10(max(mel power, 2.2e-16)); frames = 1 + L // hop."""
    _check_logmel(sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
    batch, channels, n = x.shape
    dtype, device = _dtype(float32), str(x.device)
    bank = _tensor("slaney", (sample_rate, n_fft, n_mels, float(fmin), float(fmax)), device, dtype)
    window = _tensor("hann", (n_fft,), device, dtype)
    frames = 1 + n // hop_length
    signals = x.reshape(batch * channels, n).to(dtype)
    parts = [10.0 * torch.log10((_power(_centred_spectrum(chunk, n_fft, hop_length, window)) @ bank)
                                .clamp(min=DCASE_LOG_FLOOR))
             for chunk in _chunks(signals, frames * n_fft)]
    out = torch.cat(parts) if parts else torch.empty((0, frames, n_mels), dtype=dtype, device=x.device)
    return out.to(torch.float32).reshape(batch, channels, frames, n_mels)


def kaldi_fbank(x: torch.Tensor, sample_rate: int, frame_length: int, frame_shift: int, n_mels: int, low_freq: float,
                high_freq: float, preemphasis: float, normalise: bool, float32: bool) -> torch.Tensor:
    """(B, C, frames, n_mels) float32 natural-log Kaldi fbank of x * 2**15 (snip_edges, no dither, Povey
    window, DC removal, pre-emphasis, FFT size the next power of two, floor float32 eps)."""
    if not (sample_rate > 0 and frame_length >= 2 and frame_shift >= 1 and n_mels >= 1):
        raise ValueError("invalid Kaldi fbank geometry")
    batch, channels, n = x.shape
    dtype, device = _dtype(float32), str(x.device)
    frames = 0 if n < frame_length else 1 + (n - frame_length) // frame_shift
    if frames == 0 or batch * channels == 0:
        return torch.zeros((batch, channels, frames, n_mels), dtype=torch.float32, device=x.device)
    padded = 1 << int(math.ceil(math.log2(frame_length)))
    bank = _tensor("kaldi", (sample_rate, padded, n_mels, float(low_freq), float(high_freq)), device, dtype)
    window = _tensor("povey", (frame_length,), device, dtype)
    signals = x.reshape(batch * channels, n).to(dtype)
    parts = []
    for chunk in _chunks(signals, frames * padded):
        framed = (chunk * 32768.0).unfold(-1, frame_length, frame_shift)[:, :frames]
        framed = framed - framed.mean(dim=-1, keepdim=True)
        previous = torch.cat([framed[..., :1], framed[..., :-1]], dim=-1)
        spectrum = torch.fft.rfft((framed - preemphasis * previous) * window, n=padded, dim=-1)
        energy = torch.log((_power(spectrum) @ bank).clamp(min=KALDI_LOG_FLOOR))
        if normalise:
            energy = (energy - BEATS_MEAN) / (2.0 * BEATS_STD)
        parts.append(energy)
    return torch.cat(parts).to(torch.float32).reshape(batch, channels, frames, n_mels)


def _phasor(re: torch.Tensor, im: torch.Tensor):
    """(cos, sin) of the angle of re + i im; (1, 0) where the magnitude is at most PHASE_FLOOR."""
    magnitude = torch.hypot(re, im)
    ok = magnitude > PHASE_FLOOR
    safe = torch.where(ok, magnitude, torch.ones_like(magnitude))
    return torch.where(ok, re / safe, torch.ones_like(re)), torch.where(ok, im / safe, torch.zeros_like(im))


def stereo_features(x: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float,
                    fmax: float, max_lag: int, float32: bool):
    """(bands (B, 7, frames, n_mels), ipd (B, 2, frames, n_fft//2+1), gcc (B, frames, 2)) float32, in the
    layouts of asdx.features.stereo_features; the GCC-PHAT peak ties go to the smallest |lag|, then the
    negative lag, as in the native kernel."""
    _check_logmel(sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
    if max_lag < 0:
        raise ValueError("max_lag must be >= 0")
    batch, _, n = x.shape
    dtype, device = _dtype(float32), str(x.device)
    bank = _tensor("slaney", (sample_rate, n_fft, n_mels, float(fmin), float(fmax)), device, dtype)
    window = _tensor("hann", (n_fft,), device, dtype)
    frames = 1 + n // hop_length
    max_lag = min(int(max_lag), n_fft // 2 - 1)
    lags = torch.arange(-max_lag, max_lag + 1, device=x.device)
    # candidate order: smallest |lag| first, the negative one before the positive; argmax takes the first maximum
    order = torch.as_tensor(np.lexsort((np.arange(-max_lag, max_lag + 1), np.abs(np.arange(-max_lag, max_lag + 1)))),
                            device=x.device)
    ordered_lags = lags[order]
    bands, ipds, gccs = [], [], []
    for chunk in _chunks(x.to(dtype), 2 * frames * n_fft):
        spectrum = _centred_spectrum(chunk.reshape(-1, n), n_fft, hop_length, window)
        spectrum = spectrum.reshape(chunk.shape[0], 2, frames, -1)
        near, far = spectrum[:, 0], spectrum[:, 1]
        mel_near, mel_far = _power(near) @ bank, _power(far) @ bank
        mel_mid, mel_side = (0.5 * _power(near + far)) @ bank, (0.5 * _power(near - far)) @ bank

        def db(mel):
            return 10.0 * torch.log10(mel.clamp(min=DCASE_LOG_FLOOR))

        ild = 10.0 * torch.log10((mel_near + ILD_FLOOR) / (mel_far + ILD_FLOOR))
        cross = near * far.conj()
        band_cos, band_sin = _phasor(cross.real @ bank, cross.imag @ bank)
        bin_cos, bin_sin = _phasor(cross.real, cross.imag)
        bands.append(torch.stack([db(mel_near), db(mel_far), ild, band_cos, band_sin, db(mel_mid), db(mel_side)], 1))
        ipds.append(torch.stack([bin_cos, bin_sin], dim=1))

        phat = cross.conj() / (cross.abs() + PHAT_FLOOR)
        correlation = torch.fft.irfft(phat, n=n_fft, dim=-1)  # lag k at index k mod n_fft
        values = correlation[..., ordered_lags % n_fft]
        best = values.argmax(dim=-1)
        gccs.append(torch.stack([ordered_lags[best].to(dtype), values.gather(-1, best[..., None])[..., 0]], dim=-1))
    if not bands:
        empty = torch.empty(0, dtype=torch.float32, device=x.device)
        return (empty.reshape(0, 7, frames, n_mels), empty.reshape(0, 2, frames, n_fft // 2 + 1),
                empty.reshape(0, frames, 2))
    return (torch.cat(bands).to(torch.float32), torch.cat(ipds).to(torch.float32),
            torch.cat(gccs).to(torch.float32))
