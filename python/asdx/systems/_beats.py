"""The BEATs of the BEATs systems (sera, fusion, proto, beam): one checkpoint, loaded once, its layer states cached per clip.

Each system reads one layer's states per clip of its view of the clip (near by default; far, mid or the
w1 residual: asdx.systems._stereo.view_audio) (sera, proto and beam: the tokens of `layer`; fusion: the
states below its fine-tuned blocks). The view is part of the cache key, so views never mix. They are computed
once, under bf16 autocast on CUDA (float32 on the CPU; beam asks for float32 everywhere), stored float16 in the
FeatureCache keyed by the checkpoint's content hash, the layer, the crop and that
precision, and read back every epoch (asdx.systems._features). Under torchrun each
node's first rank fills the cache while the others wait (`filled_per_node`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch

from asdx import distributed
from asdx.data.loader import ClipSet
from asdx.models.beats_checkpoint import is_random_tiny, load_beats
from asdx.models.cache import FeatureCache, beats_preprocessing
from asdx.systems._features import FeatureStore, fill_feature_store
from asdx.systems._stereo import view_audio, view_channels
from asdx.systems._training import CpuEstimate
from asdx.systems.base import SystemContext

REPORT = 'the report "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2"'
KINDS = {"fine-tuned": "fine-tuned on AS2M", "pre-trained": "pre-trained (not fine-tuned)"}
ARTICLES = {"fine-tuned": "an AS2M fine-tuned", "pre-trained": "a pre-trained"}
Filled = TypeVar("Filled")


class Backbone:
    """A loaded BEATs checkpoint: its kind, content hash and layer states (float32 tensors or cached float16).

    forward_batches counts the batches run through the model (0 when every state came from the cache).
    """

    def __init__(self, model, device: torch.device, float32: bool = False, view: str = "near"):
        self.model, self.device = model, torch.device(device)
        self.view = view  # the signal BEATs sees (view_audio)
        self.use_autocast = self.device.type == "cuda" and not float32  # float32: no bf16 autocast on CUDA either
        self.fingerprint = model.fingerprint()  # of the loaded weights: keys the cache
        self.variant = "fine-tuned" if model.cfg.finetuned_model else "pre-trained"
        self.kind = "random-tiny" if is_random_tiny(model) else KINDS[self.variant]
        self.forward_batches = 0
        self.context: SystemContext | None = None  # set by load(): the CPU estimate's warning goes there

    @classmethod
    def load(cls, checkpoint: str | None, device: torch.device, context: SystemContext, expected: str,
             system: str, wanted: str | None = None, name: str = "", float32: bool = False,
             view: str = "near") -> "Backbone":
        """load_beats(checkpoint), frozen, in eval mode; its notes go to context, and a note when its kind is not
        the `wanted` one ("fine-tuned" or "pre-trained" checkpoint `name`, the report's). expected: what the
        system uses, in words, for the error when no checkpoint is given. float32: no bf16 autocast on CUDA."""
        model = load_beats(checkpoint, device=device, expected=expected)
        model.freeze().eval()
        for note in getattr(model, "notes", ()):
            context.note(note)
        backbone = cls(model, device, float32=float32, view=view)
        backbone.context = context
        if wanted is not None and backbone.kind != "random-tiny" and backbone.variant != wanted:
            context.note(f"{system}: BEATs {model.source} is {ARTICLES[backbone.variant]} checkpoint (cfg "
                         f"finetuned_model={model.cfg.finetuned_model}); the report uses the "
                         f"{ARTICLES[wanted].split(' ', 1)[1]} {name}.")
        return backbone

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def source(self) -> str:
        return str(self.model.source)

    def described(self) -> str:
        return self.source if self.kind == self.source else f"{self.source} ({self.kind})"

    def resolve_layer(self, wanted: int | None) -> int:
        """The layer a config asks for (None: the last), checked against this model's depth."""
        layer = self.cfg.encoder_layers if wanted is None else int(wanted)
        if not 0 <= layer <= self.cfg.encoder_layers:
            raise ValueError(f"layer: {layer}, but this BEATs has {self.cfg.encoder_layers} layers "
                             f"(0 = encoder input .. {self.cfg.encoder_layers}).")
        return layer

    def describe(self, layer: int) -> dict:
        """What a model file records of the BEATs states it was trained on (check_trained_on reads it back)."""
        return {"fingerprint": self.fingerprint, "layer": layer, "source": self.source}

    def check_trained_on(self, path: Path, saved: dict, layer: int, what: str) -> None:
        """A model file's `describe` record must match this checkpoint and layer: else train it again."""
        if saved.get("fingerprint") != self.fingerprint or saved.get("layer") != layer:
            raise ValueError(f"{path}: the {what} was trained on BEATs {saved.get('source', '(another checkpoint)')} "
                             f"layer {saved.get('layer')}, not on {self.source} layer {layer}; train it again.")

    def autocast(self):
        """bf16 autocast on CUDA (unless float32 was asked for), nothing elsewhere: the precision the cache key names."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_autocast)

    def states(self, audio: torch.Tensor, layer: int,
               augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C, samples) audio -> float32 states after `layer` (B, N, D) of the view's signal, no gradient;
        augment (fusion's SpecAugment) changes the normalised fbank first."""
        signal = view_audio(audio.to(self.device), self.view)
        with torch.no_grad(), self.autocast():
            fbank = self.model.preprocess(signal)
            if augment is not None:
                fbank = augment(fbank)
            states = self.model.encode(fbank, layers=[layer], upto=layer).hidden[layer]
        self.forward_batches += 1
        return states.float()

    def tokens(self, audio: torch.Tensor, layer: int) -> np.ndarray:
        """states() as the float16 array the cache stores; refuses non-finite values."""
        with np.errstate(over="ignore"):  # an overflow is refused just below, with its cause
            tokens = self.states(audio, layer).cpu().numpy().astype(np.float16)
        if not np.isfinite(tokens).all():
            raise ValueError(f"BEATs layer {layer} states: non-finite values (float16 overflow or a broken "
                             "checkpoint).")
        return tokens

    @property
    def input_channels(self) -> int:
        """Channels the runner must decode for this view."""
        return view_channels(self.view)

    @property
    def frequency_patches(self) -> int:
        """F_p, the patches along the 128 fbank bins (8 for 16 x 16 patches)."""
        return 128 // self.cfg.input_patch_size

    def grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T_p * F_p, D) states -> (B, T_p, F_p, D): BEATs orders its patch tokens row-major over
        (time, frequency), token t * F_p + f (BEATs.patchify)."""
        bands = self.frequency_patches
        if tokens.ndim != 3 or tokens.shape[1] % bands:
            raise ValueError(f"tokens: expected (batch, time patches x {bands} frequency patches, dim), got shape "
                             f"{tuple(tokens.shape)}.")
        return tokens.reshape(tokens.shape[0], tokens.shape[1] // bands, bands, tokens.shape[2])

    def cache(self, root: Path, layer: int, seconds: float | None) -> FeatureCache:
        precision = "bf16-autocast" if self.use_autocast else "float32"
        # near keeps the key it had before views existed (channel 0), so existing caches stay valid
        signal = {"channel": 0} if self.view == "near" else {"view": self.view, "view_recipe": "asdx.stereo_view/1"}
        preprocessing = beats_preprocessing(seconds=seconds, precision=precision, stored="float16", **signal)
        return FeatureCache(root, self.fingerprint, layer, preprocessing, kind="tokens")

    def token_bytes(self, clips: ClipSet) -> int:
        """float16 size of the clips' states from their cropped lengths (25 ms / 10 ms fbank, 16 x 16 patches)."""
        frames = np.maximum(1 + (clips.cropped_lengths - 400) // 160, 0)
        tokens = (frames // self.cfg.input_patch_size) * (128 // self.cfg.input_patch_size)
        return int(tokens.sum()) * self.cfg.encoder_embed_dim * 2

    def store(self, clips: ClipSet, root: Path, layer: int, memory_bytes: int, batch_size: int,
              stage: Callable[[str], None], desc: str) -> FeatureStore:
        """Every clip's states of `layer` cached (forwarding only the missing clips), as a FeatureStore; on the
        CPU the first batches are timed and a long embedding says so (CpuEstimate)."""
        cache = self.cache(root, layer, clips.seconds)
        forward = lambda audio: self.tokens(audio, layer)  # noqa: E731
        if self.context is not None and self.device.type == "cpu":
            batches = -(-sum(not cache.contains(clip) for clip in clips.clips) // batch_size)
            forward = CpuEstimate(self.context, f"BEATs embedding ({desc})", batches,
                                  f"batch of {batch_size} clips").wrap(forward)
        return fill_feature_store(cache, clips, forward, memory_bytes, batch_size, self.token_bytes(clips), stage,
                                  desc, channels=self.input_channels)


def cache_root(context: SystemContext, folder: Path, fallback: str) -> Path:
    """context.cache_dir (the runner's cache, shared by runs), else `fallback` inside the system's folder."""
    return Path(context.cache_dir) if context.cache_dir is not None else Path(folder) / fallback


def filled_per_node(fill: Callable[[], Filled], world: distributed.World) -> Filled:
    """fill() on every rank, but under torchrun each node's first rank fills the cache first while the others
    wait: they then only read it (no clip forwarded twice, no two writers of one file)."""
    if world.size > 1:
        if world.is_local_main:
            fill()
        distributed.barrier()
    return fill()


__all__ = ["Backbone", "REPORT", "cache_root", "filled_per_node"]
