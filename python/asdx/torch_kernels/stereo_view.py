"""The near/far residual (view "w1") in torch: torch.stft / torch.istft of the published recipe.

The same steps as the native kernel (csrc/include/asdx/stereo_view.h) and asdx.reference.stereo_view:
joint peak scale to 0.9, periodic Hann STFT (1024 / 512, centred, reflect padding), per-bin
H = sum C conj(F) / (sum |F|^2 + 1e-12), Y = C - H F, istft cut to the length, scale undone.
float32 throughout, as the recipe; the per-bin sums over frames in float64, as the native kernel.
Input: a validated float32 tensor (clips, 2, samples), samples > 512.
"""

from __future__ import annotations

import torch

from asdx.reference.stereo_view import H_FLOOR, HOP, N_FFT, PEAK, PEAK_FLOOR

__all__ = ["stereo_view_w1"]

_CHUNK_VALUES = 1 << 24  # samples per chunk of clips: bounds the spectra's memory


def _w1(x: torch.Tensor) -> torch.Tensor:
    clips, _, n = x.shape
    peak = x.abs().amax(dim=(1, 2))
    scale = torch.where(peak > PEAK_FLOOR, PEAK / torch.where(peak > PEAK_FLOOR, peak, torch.ones_like(peak)),
                        torch.ones_like(peak))
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32, device=x.device)
    spectra = torch.stft((x * scale[:, None, None]).reshape(-1, n), N_FFT, hop_length=HOP, win_length=N_FFT,
                         window=window, center=True, pad_mode="reflect", normalized=False, onesided=True,
                         return_complex=True)
    spectra = spectra.reshape(clips, 2, *spectra.shape[1:])  # (clips, 2, bins, frames)
    near, far = spectra[:, 0], spectra[:, 1]
    cross = (near.to(torch.complex128) * far.conj().to(torch.complex128)).sum(-1)
    power = (far.real.double().square() + far.imag.double().square()).sum(-1)
    transfer = (cross / (power + H_FLOOR)).to(torch.complex64)
    residual = near - transfer[..., None] * far
    y = torch.istft(residual, N_FFT, hop_length=HOP, win_length=N_FFT, window=window, center=True,
                    normalized=False, onesided=True, length=n)
    return y / scale[:, None]


def stereo_view_w1(x: torch.Tensor) -> torch.Tensor:
    """(clips, 2, samples) float32 -> (clips, samples) float32 residual, on x's device."""
    clips, _, n = x.shape
    if clips == 0:
        return torch.empty((0, n), dtype=torch.float32, device=x.device)
    step = max(1, _CHUNK_VALUES // (2 * n))
    return torch.cat([_w1(x[start:start + step]) for start in range(0, clips, step)]).to(torch.float32)
