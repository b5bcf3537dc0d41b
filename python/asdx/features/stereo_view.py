"""Views of a near/far stereo clip as one signal: near, far, mid, or the near/far residual w1.

DCASE 2026 Task 2 is noise-aware: channel 0 is near the machine, channel 1 far from it and richer in
the surrounding noise. "w1" takes from the near channel what the far channel predicts linearly, per
frequency bin over the whole clip (the recipe of kasahart/asd-experiments, docs/02-protocol.md;
asdx/stereo_view.h and asdx.reference.stereo_view say how). Every system that reads one channel
gets its audio through this call (asdx.systems._stereo.view_audio).
"""

from __future__ import annotations

import numpy as np
import torch

from asdx import torch_kernels
from asdx._arrays import prepare_waveform
from asdx._cuda import scratch
from asdx._native import _C
from asdx.features._launch import run_frontend
from asdx.reference.stereo_view import N_FFT

VIEWS = ("near", "far", "mid", "w1")
# The CUDA kernel reads the float32 n_fft-1024 twiddles, bit reversal and periodic Hann of these log-mel tables.
_TABLES = ("logmel", (16000, N_FFT, 512, 128, 0.0, 8000.0, True))


def stereo_view(audio, view: str = "w1", *, check_finite: bool | None = None):
    """(clips, 2, samples) float32 audio (channel 0 near, 1 far) -> (clips, samples) float32, same kind and device.

    view: "near" (channel 0), "far" (channel 1), "mid" ((near + far) / 2) or "w1" (near minus its linear
    prediction from far, per frequency bin: the native CPU or CUDA kernel, or the torch implementation as
    asdx.kernels chooses). w1 needs more than 512 samples per clip (the centred STFT's reflect padding).
    check_finite: as in logmel_dcase (host input with NaN/inf raises; CUDA input gives NaN for that clip).
    Not differentiable.
    """
    if view not in VIEWS:
        raise ValueError(f"view: must be one of {', '.join(VIEWS)}, got {view!r}.")
    wave = prepare_waveform(audio, name="audio", channels=2, check_finite=check_finite)
    clips, _, n_samples = wave.shape
    if view != "w1":
        data = wave.data
        out = data[:, 0] if view == "near" else data[:, 1] if view == "far" else 0.5 * (data[:, 0] + data[:, 1])
        if wave.is_torch:
            out = out.clone() if view != "mid" else out
            if wave.finite_mask is not None:
                out.masked_fill_(~wave.finite_mask[:, None], float("nan"))
            return out
        return np.ascontiguousarray(out, dtype=np.float32)
    if n_samples <= N_FFT // 2:
        raise ValueError(f"audio: {n_samples} samples; the w1 view's centred STFT (reflect padding) needs more than "
                         f"{N_FFT // 2}.")

    def cuda_call(source, out, tables, offsets, stream):
        work = scratch(_C.stereo_view_scratch_bytes(clips, n_samples), wave.data.device)
        _C.stereo_view_w1_cuda(source, clips, n_samples, out, work.data_ptr(), tables, offsets, stream)

    (out,) = run_frontend(wave, "stereo_view", [(clips, n_samples)], lambda data: [_C.stereo_view_w1_cpu(data)],
                          cuda_call, _TABLES, lambda x: [torch_kernels.stereo_view_w1(x)], family="stereo_view")
    return out


__all__ = ["VIEWS", "stereo_view"]
