"""The near/far microphone pair: the one-signal view a system reads (view_audio, view_channels), and the stereo
features, cached per clip like the BEATs tokens (proto's stereo branch).

view_audio is the one place a system turns its decoded clips into the signal it reads: near, far, mid or the
w1 residual (asdx.features.stereo_view), on the clips' device (the CUDA kernel for a GPU run).

asdx.features.stereo_features on the model's device (the CUDA kernel for a GPU run) gives seven
log-mel planes (near, far, ILD, IPD cos/sin, mid, side) and the per-frame GCC-PHAT lag and peak
height; they are packed into one float16 array per clip (frames, 7 * n_mels + 2), stored in the
FeatureCache and unpacked per batch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from asdx.data.loader import ClipSet
from asdx.models.cache import FeatureCache
from asdx.systems._features import FeatureStore, fill_feature_store

def view_channels(view: str) -> int:
    """Channels the runner must decode for `view`: 1 for near, 2 for the others."""
    return 1 if view == "near" else 2


def view_audio(audio, view: str):
    """(B, C, samples) decoded clips (numpy or torch, C = view_channels(view) or more) -> (B, samples) float32."""
    if view == "near":
        return audio[:, 0]
    from asdx.features import stereo_view

    return stereo_view(audio[:, :2], view)


STEREO = {"sample_rate": 16000, "n_fft": 1024, "hop_length": 512, "n_mels": 128, "max_lag": 320}
PLANES = 7


class StereoFeatures:
    """Packs, caches and unpacks the stereo features; forward_batches counts the batches computed."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.forward_batches = 0

    @torch.no_grad()
    def pack(self, audio: torch.Tensor) -> np.ndarray:
        """(B, 2, samples) -> float16 (B, frames, 7 * n_mels + 2): the bands, then GCC lag and height."""
        from asdx.features import stereo_features

        features = stereo_features(audio.to(self.device), **STEREO)
        bands, gcc = features.bands, features.gcc
        b, c, t, m = bands.shape
        packed = torch.cat([bands.permute(0, 2, 1, 3).reshape(b, t, c * m), gcc], dim=2)
        self.forward_batches += 1
        return packed.float().cpu().numpy().astype(np.float16)

    @staticmethod
    def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of packed features (B, T, 7 * M + 2) -> bands (B, 7, T, M) and gcc (B, T, 2), float32."""
        m = STEREO["n_mels"]
        packed = packed.float()
        b, t, _ = packed.shape
        return packed[:, :, : PLANES * m].reshape(b, t, PLANES, m).permute(0, 2, 1, 3), packed[:, :, PLANES * m :]

    def store(self, clips: ClipSet, root: Path, memory_bytes: int, batch_size: int, stage: Callable[[str], None],
              desc: str) -> FeatureStore:
        """Every clip's packed features cached (computing only the missing clips), as a FeatureStore."""
        key = hashlib.sha256(json.dumps({"frontend": "asdx.stereo_features/1", **STEREO}).encode()).hexdigest()
        cache = FeatureCache(root, key, 0, {"seconds": clips.seconds, **STEREO}, kind="stereo")
        frames = 1 + clips.cropped_lengths // STEREO["hop_length"]
        total_bytes = int(frames.sum()) * (PLANES * STEREO["n_mels"] + 2) * 2
        return fill_feature_store(cache, clips, self.pack, memory_bytes, batch_size, total_bytes, stage, desc,
                                  channels=2)


__all__ = ["STEREO", "StereoFeatures", "view_audio", "view_channels"]
