"""BEATs audio encoder, written from the architecture (Chen et al., ICML 2023), loading official checkpoints.

Reference code: microsoft/unilm, beats/BEATs.py, beats/backbone.py and beats/modules.py.

The module tree reproduces the official state-dict key names exactly, so a strict
`load_state_dict` of an official `{cfg, model}` file succeeds with no mapping:
  - the positional conv keeps weight norm as two parameters named `weight_g` /
    `weight_v` (the legacy hook's names; torch's parametrizations API would rename
    them), folded into the conv weight at every forward (as backbone.py's weight_norm does);
  - the relative-position embedding is one module owned by layer 0 and assigned to
    every layer, so the state dict holds the tied copies the checkpoints contain.
The model is always built from the checkpoint's `cfg` (never from code defaults):
a post-LN model loaded without DeepNorm loads silently and gives near-random
embeddings (avex PR #162), so such configurations are refused.

No padding mask: asdx feeds fixed-length clips (the clips of a split share one length,
checked on loading, and the runner crops them to one length), so every token is real and pooling over all tokens is exact.
The official sample -> token mask mapping is also wrong for the 2-D patch layout
(tokens are ordered time * bands + band; unilm #1427), a second reason not
to reproduce it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdx._atomic import atomic_write

SAMPLE_RATE = 16000


# --------------------------------------------------------------------------- config
@dataclass
class BEATsConfig:
    """The checkpoint `cfg`; field names are the official ones, defaults are the released values (BEATsConfig).

    Defaults are those of the released iter3 / iter3+ checkpoints, not the
    reference code's defaults, so that a cfg with a missing key still describes
    a released model. Unknown keys are kept in `extra` and written back on save.
    """

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 0.6
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False
    predictor_dropout: float = 0.0
    predictor_class: int = 527
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            kind = {"int": int, "bool": bool, "float": float, "str": str}[f.type]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if kind is int and isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"cfg[{f.name!r}]: expected {kind.__name__}, got {value!r}.")
        positive = ("input_patch_size", "embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                    "encoder_attention_heads", "conv_pos", "conv_pos_groups", "num_buckets", "max_distance",
                    "predictor_class")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"cfg[{name!r}]: expected a positive value, got {getattr(self, name)}.")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"cfg['encoder_attention_heads']: {self.encoder_attention_heads} does not divide "
                             f"encoder_embed_dim {self.encoder_embed_dim}.")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"cfg['conv_pos_groups']: {self.conv_pos_groups} does not divide "
                             f"encoder_embed_dim {self.encoder_embed_dim}.")
        if self.activation_fn != "gelu":
            raise ValueError(f"cfg['activation_fn']: only 'gelu' (every released BEATs) is supported, "
                             f"got {self.activation_fn!r}.")
        if self.layer_norm_first:
            raise ValueError("cfg['layer_norm_first']: True (pre-LN) is not a released BEATs configuration and is "
                             "not supported; every released checkpoint is post-LN with DeepNorm (Wang et al. 2022).")
        if not self.deep_norm:
            raise ValueError("cfg['deep_norm']: False, but every released BEATs checkpoint is post-LN with DeepNorm "
                             "(Wang et al. 2022). A post-LN model without DeepNorm loads the weights silently and "
                             "gives near-random embeddings: this cfg was probably rebuilt without reading the "
                             "checkpoint's own cfg.")
        if self.num_buckets < 4 or self.num_buckets % 4:
            raise ValueError(f"cfg['num_buckets']: expected a positive multiple of 4, got {self.num_buckets}.")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
                     "predictor_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"cfg[{name!r}]: expected a probability in [0, 1), got {getattr(self, name)}.")

    @classmethod
    def from_dict(cls, cfg: dict) -> "BEATsConfig":
        """Official cfg dict -> config; missing keys take the released defaults, unknown ones go to `extra`."""
        if not isinstance(cfg, dict):
            raise ValueError(f"cfg: expected a dict, got {type(cfg).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in cfg.items() if k in names}
        extra = {k: v for k, v in cfg.items() if k not in names}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        """The official cfg dict (known fields, then the unknown keys that came with the file)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        """DeepNorm residual scale (2 N)^(1/4) (DeepNet, Wang et al. 2022)."""
        return (2.0 * self.encoder_layers) ** 0.25


def tiny_config(**overrides) -> BEATsConfig:
    """A small configuration for tests and the demo (2 layers, 64 dims, 4 heads)."""
    values = dict(embed_dim=32, encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                  encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, predictor_class=5)
    values.update(overrides)
    return BEATsConfig(**values)


# --------------------------------------------------------------------------- building blocks
def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 320,
                             max_distance: int = 800) -> torch.Tensor:
    """T5-style bidirectional bucket of rel = key - query (relative_position_bucket, beats/backbone.py).

    Half the buckets per direction (positive offsets get +half). Within a half,
    |rel| < half/2 is its own bucket; beyond, buckets grow logarithmically up to
    max_distance, capped at half - 1. The log is taken in float32, as the
    reference does, so boundary cases round the same way; rel = 0 never reaches
    the log (it is clamped to 1 there, then discarded).
    """
    half = num_buckets // 2
    exact = half // 2
    bucket = (relative_position > 0).long() * half
    distance = relative_position.abs()
    safe = distance.clamp(min=1).float()
    large = exact + (torch.log(safe / exact) / math.log(max_distance / exact) * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, large)


def gate_factor(query_heads: torch.Tensor, grep_linear: nn.Linear, grep_a: torch.Tensor) -> torch.Tensor:
    """gru_rel_pos gate (beats/backbone.py): (B, H, L, head_dim) unscaled queries -> (B, H, L, 1) factor on the bias.

    grep_linear gives 8 values, summed in two groups of 4, then sigmoid -> (g_a, g_b);
    gate = g_a * (g_b * grep_a[h] - 1) + 2.
    """
    b, h, length, _ = query_heads.shape
    groups = grep_linear(query_heads).view(b, h, length, 2, 4).sum(-1)
    g_a, g_b = torch.sigmoid(groups).chunk(2, dim=-1)
    return g_a * (g_b * grep_a - 1.0) + 2.0


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward (layer_wise_gradient_decay_ratio; GradMultiply)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def _gelu32(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU computed in float32, whatever the input dtype (gelu, beats/modules.py)."""
    return F.gelu(x.float()).type_as(x)


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight norm over dim=2, keeping the legacy `weight_g`/`weight_v` parameters.

    W[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||, the norm over output channels and
    in-group input channels for each kernel tap.
    """

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.padding = kernel // 2
        self.groups = groups
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
        self.bias = nn.Parameter(torch.empty(channels))

    def weight(self) -> torch.Tensor:
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight().to(x.dtype), self.bias.to(x.dtype), padding=self.padding, groups=self.groups)


class _SamePad(nn.Module):
    """Drops the last output frame of an even kernel with padding kernel // 2 (keeps the length)."""

    def __init__(self, kernel: int):
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x):
        return x[..., : x.shape[-1] - self.remove] if self.remove else x


class _GELU(nn.Module):
    def forward(self, x):
        return _gelu32(x)


class BEATsAttention(nn.Module):
    """Multi-head self-attention with the gated, bucketed relative position bias (beats/backbone.py)."""

    def __init__(self, cfg: BEATsConfig, owns_bias: bool):
        super().__init__()
        dim, self.heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.head_dim = cfg.head_dim
        self.scaling = self.head_dim ** -0.5
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.dropout = cfg.attention_dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if cfg.relative_position_embedding and owns_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, self.heads)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))
        self.use_sdpa = True

    def compute_bias(self, length: int) -> torch.Tensor:
        """(H, L, L) raw bias for query i, key j: embedding[bucket(j - i)]."""
        positions = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_bucket(positions[None, :] - positions[:, None], self.num_buckets,
                                           self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, length, dim = x.shape
        q = self.q_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.heads, self.head_dim).transpose(1, 2)
        mask = None
        if bias is not None:
            mask = bias.unsqueeze(0).to(q.dtype)
            if self.gru_rel_pos:
                mask = gate_factor(q, self.grep_linear, self.grep_a).to(q.dtype) * mask
            mask = mask.expand(b, -1, -1, -1)
        dropout = self.dropout if self.training else 0.0
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            logits = (q * self.scaling) @ k.transpose(-1, -2)
            if mask is not None:
                logits = logits + mask
            weights = F.dropout(torch.softmax(logits.float(), dim=-1).type_as(logits), dropout, self.training)
            out = weights @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, length, dim))


class BEATsLayer(nn.Module):
    """Post-LN DeepNorm block: h = LN(a x + Attn(x)); y = LN(a h + FFN(h)), a = (2 N)^(1/4) (DeepNet)."""

    def __init__(self, cfg: BEATsConfig, index: int):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.alpha = cfg.deep_norm_alpha
        self.self_attn = BEATsAttention(cfg, owns_bias=index == 0)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.activation_dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(self.alpha * x + self.dropout1(self.self_attn(x, bias)))
        ffn = self.dropout3(self.fc2(self.dropout2(_gelu32(self.fc1(x)))))
        return self.final_layer_norm(self.alpha * x + ffn)


class BEATsEncoder(nn.Module):
    """Conv positional embedding, LayerNorm, then the layers; returns every hidden state (layer_results)."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups),
                                      _SamePad(cfg.conv_pos), _GELU())
        self.layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(BEATsLayer(cfg, i) for i in range(cfg.encoder_layers))
        if cfg.relative_position_embedding:
            shared = self.layers[0].self_attn.relative_attention_bias
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = shared  # tied: one module, N state-dict copies
        self.relative_position_embedding = cfg.relative_position_embedding
        self.gradient_ratio = cfg.layer_wise_gradient_decay_ratio
        self.layerdrop = cfg.encoder_layerdrop
        self.layerdrop_generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor, keep: Iterable[int] = (), upto: int | None = None) \
            -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x (B, N, D) -> last states (B, N, D) and {i: states} for i in keep (0 = encoder input, i = layer i).

        upto: stop after that layer (its states are returned as the last ones); the layers above are not run.
        """
        keep = set(keep)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.layer_norm(x))
        hidden = {0: x} if 0 in keep else {}
        return self.forward_layers(x, 0, keep, hidden, end=upto), hidden

    def forward_layers(self, x: torch.Tensor, start: int = 0, keep: Iterable[int] = (),
                       hidden: dict | None = None, end: int | None = None) -> torch.Tensor:
        """x = the states after layer `start` (0 = encoder input) -> the states after layer `end` (default N).

        Runs layers start+1..end. Lets a caller cache the output of frozen lower layers
        and run only the top ones (fine-tuning the top k blocks). States of layers in
        keep go into hidden.
        """
        end = len(self.layers) if end is None else int(end)
        if not 0 <= start <= end <= len(self.layers):
            raise ValueError(f"start, end: expected 0 <= start <= end <= {len(self.layers)}, got {start}, {end}.")
        keep = set(keep)
        bias = self.layers[0].self_attn.compute_bias(x.shape[1]) if self.relative_position_embedding else None
        for i, layer in enumerate(self.layers[start:end], start=start + 1):
            if self.gradient_ratio != 1.0 and x.requires_grad:
                x = _GradMultiply.apply(x, self.gradient_ratio)
            skip = self.training and self.layerdrop > 0 and \
                torch.rand((), generator=self.layerdrop_generator).item() < self.layerdrop
            if not skip:
                x = layer(x, bias)
            if i in keep and hidden is not None:
                hidden[i] = x
        return x


# --------------------------------------------------------------------------- the model
@dataclass
class BEATsFeatures:
    """extract() result: last-layer tokens (B, N, D) and the requested hidden states {layer: (B, N, D)}."""

    tokens: torch.Tensor
    hidden: dict[int, torch.Tensor]
    time_patches: int
    bands: int


class BEATs(nn.Module):
    """BEATs encoder (+ the AS2M predictor of fine-tuned checkpoints).

    Attributes: `cfg` (BEATsConfig), `notes` (strings every result made with this
    model must carry, e.g. the random-tiny warning), `source` (where it came from).
    """

    def __init__(self, cfg: BEATsConfig | dict | None = None):
        super().__init__()
        if cfg is None:
            cfg = BEATsConfig()
        self.cfg = cfg if isinstance(cfg, BEATsConfig) else BEATsConfig.from_dict(cfg)
        cfg = self.cfg
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=cfg.input_patch_size,
                                         stride=cfg.input_patch_size, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        # the reference only has the projection when the two widths differ (post_extract_proj, beats/BEATs.py)
        self.post_extract_proj = (nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
                                  if cfg.embed_dim != cfg.encoder_embed_dim else None)
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.encoder = BEATsEncoder(cfg)
        if cfg.finetuned_model:
            self.predictor_dropout = nn.Dropout(cfg.predictor_dropout)
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)
        self.label_dict = None
        self.notes: tuple[str, ...] = ()
        self.source = "random init"
        self.reset_parameters()

    # ----------------------------------------------------------------- init
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random init in the spirit of the reference (DeepNorm beta gain on v/out/FFN); no-op on meta."""
        if self.patch_embedding.weight.is_meta:
            return
        cfg = self.cfg
        beta = (8.0 * cfg.encoder_layers) ** -0.25

        def xavier(weight, gain):
            fan_out, fan_in = weight.shape[0], weight[0].numel()
            std = gain * math.sqrt(2.0 / (fan_in + fan_out))
            with torch.no_grad():
                weight.normal_(0.0, std, generator=generator)

        with torch.no_grad():
            xavier(self.patch_embedding.weight, 1.0)
            if self.post_extract_proj is not None:
                xavier(self.post_extract_proj.weight, 1.0)
                self.post_extract_proj.bias.zero_()
            conv = self.encoder.pos_conv[0]
            conv.weight_v.normal_(0.0, math.sqrt(4.0 / (cfg.conv_pos * cfg.encoder_embed_dim)), generator=generator)
            conv.weight_g.copy_(conv.weight_v.norm(dim=(0, 1), keepdim=True))
            conv.bias.zero_()
            for layer in self.encoder.layers:
                attn = layer.self_attn
                for proj, gain in ((attn.q_proj, 1.0), (attn.k_proj, 1.0), (attn.v_proj, beta),
                                   (attn.out_proj, beta), (layer.fc1, beta), (layer.fc2, beta)):
                    xavier(proj.weight, gain)
                    proj.bias.zero_()
                if cfg.gru_rel_pos:
                    xavier(attn.grep_linear.weight, 1.0)
                    attn.grep_linear.bias.zero_()
                    attn.grep_a.fill_(1.0)
            if cfg.relative_position_embedding:
                self.encoder.layers[0].self_attn.relative_attention_bias.weight.normal_(0.0, 1.0, generator=generator)
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            if cfg.finetuned_model:
                xavier(self.predictor.weight, 1.0)
                self.predictor.bias.zero_()

    # ----------------------------------------------------------------- forward
    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def preprocess(self, waveform) -> torch.Tensor:
        """(B, samples) or (B, 1, samples) audio in [-1, 1] at 16 kHz -> normalised fbank (B, frames, 128).

        The same features as BEATs.preprocess (microsoft/unilm beats/BEATs.py).

        asdx's kaldi_fbank already applies the 2**15 scale and, with normalise=True,
        (fbank - 15.41663) / (2 * 6.55582); it runs the CUDA kernel for a CUDA tensor.
        """
        from asdx.features import kaldi_fbank

        wave = waveform if isinstance(waveform, torch.Tensor) else torch.as_tensor(np.asarray(waveform))
        if wave.ndim == 3:
            if wave.shape[1] != 1:
                raise ValueError(f"waveform: expected one channel, got {wave.shape[1]} (select a channel first).")
            wave = wave[:, 0]
        if wave.ndim != 2:
            raise ValueError(f"waveform: expected (batch, samples) or (batch, 1, samples), got shape "
                             f"{tuple(wave.shape)}.")
        if wave.shape[1] < 400 + 160 * (self.cfg.input_patch_size - 1):  # frames >= one patch
            raise ValueError(f"waveform: {wave.shape[1]} samples is shorter than one patch of "
                             f"{self.cfg.input_patch_size} fbank frames.")
        device = self.device if self.device.type != "meta" else torch.device("cpu")
        fbank = kaldi_fbank(wave.to(device=device, dtype=torch.float32)[:, None], normalise=True)
        return fbank[:, 0]

    def patchify(self, fbank: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, T, 128) fbank -> tokens (B, T'*F', embed_dim), token index t * F' + f (16x16 patches)."""
        patches = self.patch_embedding(fbank.unsqueeze(1).to(self.patch_embedding.weight.dtype))
        b, c, time_patches, bands = patches.shape
        return patches.reshape(b, c, -1).transpose(1, 2), time_patches, bands

    def encode(self, fbank: torch.Tensor, layers: Iterable[int] = (), upto: int | None = None) -> BEATsFeatures:
        """Normalised fbank (B, T, 128) -> BEATsFeatures; layers: 0 (encoder input) .. encoder_layers.

        upto: run the encoder only through that layer (tokens = its states; the layers asked for must be <= upto).
        """
        layers = self._check_layers(layers)
        if upto is not None and (not 0 <= upto <= self.cfg.encoder_layers or any(i > upto for i in layers)):
            raise ValueError(f"upto: expected 0..{self.cfg.encoder_layers} and >= every requested layer {layers}, "
                             f"got {upto}.")
        tokens, time_patches, bands = self.patchify(fbank)
        tokens = self.layer_norm(tokens)
        if self.post_extract_proj is not None:
            tokens = self.post_extract_proj(tokens)
        out, hidden = self.encoder(self.dropout_input(tokens), keep=layers, upto=upto)
        return BEATsFeatures(out, {i: hidden[i] for i in layers}, time_patches, bands)

    def extract(self, waveform, layers: Iterable[int] = ()) -> BEATsFeatures:
        """Audio (B, samples) -> last-layer tokens (B, N, D) and the requested hidden states (layer_results)."""
        return self.encode(self.preprocess(waveform), layers)

    def forward(self, waveform) -> torch.Tensor:
        """Audio -> last-layer tokens (B, N, D)."""
        return self.extract(waveform).tokens

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fine-tuned head: per-token logits, mean over tokens, sigmoid -> (B, predictor_class) (extract_features)."""
        if not self.cfg.finetuned_model:
            raise ValueError("predict: this BEATs has no predictor (cfg finetuned_model=False).")
        return torch.sigmoid(self.predictor(self.predictor_dropout(tokens)).mean(dim=1))

    def classify(self, waveform) -> torch.Tensor:
        """Audio -> clip probabilities of the fine-tuned checkpoints' classes."""
        return self.predict(self.extract(waveform).tokens)

    def _check_layers(self, layers) -> list[int]:
        layers = sorted({int(i) for i in layers})
        bad = [i for i in layers if not 0 <= i <= self.cfg.encoder_layers]
        if bad:
            raise ValueError(f"layers: {bad} out of range 0..{self.cfg.encoder_layers} "
                             "(0 = encoder input, i = output of layer i).")
        return layers

    def set_attention(self, sdpa: bool) -> "BEATs":
        """Chooses F.scaled_dot_product_attention (default) or the explicit softmax(q k^T / sqrt(d) + bias)."""
        for layer in self.encoder.layers:
            layer.self_attn.use_sdpa = bool(sdpa)
        return self

    # ----------------------------------------------------------------- trainable subsets
    def freeze(self) -> "BEATs":
        """No parameter requires a gradient (frozen feature extractor)."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def unfreeze_top(self, k: int) -> "BEATs":
        """Freezes everything, then unfreezes the top k encoder layers ("top k blocks fine-tuned").

        The shared relative-position embedding stays frozen unless k covers every
        layer: it also feeds the frozen lower layers, which must not change.
        """
        if not 0 <= int(k) <= self.cfg.encoder_layers:
            raise ValueError(f"k: expected 0..{self.cfg.encoder_layers}, got {k}.")
        self.freeze()
        n = self.cfg.encoder_layers
        for layer in self.encoder.layers[n - int(k):]:
            for p in layer.parameters():
                p.requires_grad_(True)
        if self.cfg.relative_position_embedding and int(k) < n:
            self.encoder.layers[0].self_attn.relative_attention_bias.weight.requires_grad_(False)
        return self

    # ----------------------------------------------------------------- persistence
    def fingerprint(self) -> str:
        """SHA-256 of the cfg and every weight: identifies the features this model computes (cache key)."""
        digest = hashlib.sha256(json.dumps(self.cfg.to_dict(), sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def load_official_state_dict(self, state: dict) -> None:
        """Strict load of official key names; a mismatch raises ValueError listing every missing/unexpected key."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
        if missing or unexpected or wrong:
            raise ValueError("checkpoint: state dict does not match the BEATs built from its cfg:"
                             + "".join(f"\n  {title} ({len(keys)}): {', '.join(keys)}"
                                       for title, keys in (("missing", missing), ("unexpected", unexpected),
                                                           ("wrong shape", wrong)) if keys))
        if self.cfg.relative_position_embedding:
            name = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
            first = state[name.format(0)]
            for i in range(1, self.cfg.encoder_layers):
                if not torch.equal(state[name.format(i)], first):
                    raise ValueError(f"checkpoint: {name.format(i)} differs from layer 0's copy; the relative "
                                     "position embedding is shared by all layers (microsoft/unilm beats/backbone.py).")
        self.load_state_dict(state, strict=True)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu", allow_pickle: bool = False) -> "BEATs":
        """Builds the model from the file's own cfg and loads its weights strictly.

        The file is read with torch.load(weights_only=True): official checkpoints hold
        only dicts, primitives and tensors, so this works and never runs pickled code.
        allow_pickle=True falls back to weights_only=False, only for files you trust
        (an old checkpoint holding other Python objects); it is never done silently.
        A file that is not a BEATs checkpoint (not torch.save output, other objects, other
        keys) is one ValueError line naming it, without torch's own multi-line advice.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint: {path} does not exist.")
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # the unpickler refuses non-tensor objects with various error types
            if not _saved_by_torch(path):
                raise ValueError(f"checkpoint: {path} is not a BEATs checkpoint (not a file written by torch.save)."
                                 ) from None
            if not allow_pickle:
                raise ValueError(f"checkpoint: {path} is not a BEATs checkpoint: it holds pickled Python objects, "
                                 "not only the dicts and tensors of the official format, and asdx does not run "
                                 "pickled code.") from error
            checkpoint = torch.load(path, map_location=map_location, weights_only=False)
        if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
            keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise ValueError(f"checkpoint: {path} is not a BEATs checkpoint: expected a dict with 'cfg' and 'model' "
                             f"(and 'label_dict'), found {keys}.")
        if not isinstance(checkpoint["cfg"], dict) or not isinstance(checkpoint["model"], dict):
            raise ValueError(f"checkpoint: {path} is not a BEATs checkpoint: its 'cfg' and 'model' must be dicts.")
        model = cls(BEATsConfig.from_dict(dict(checkpoint["cfg"])))
        if not set(model.state_dict()) & set(checkpoint["model"]):  # nothing in common: another kind of model
            raise ValueError(f"checkpoint: {path} is not a BEATs checkpoint: its 'model' holds none of the BEATs "
                             "weight names.")
        model.load_official_state_dict(checkpoint["model"])
        model.label_dict = checkpoint.get("label_dict")
        model.source = str(path)
        return model.eval()

    def checkpoint_dict(self) -> dict:
        """The official format: {'cfg', 'model'[, 'label_dict']} with every tensor on the CPU."""
        out = {"cfg": self.cfg.to_dict(), "model": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}}
        if self.label_dict is not None:
            out["label_dict"] = self.label_dict
        return out

    def save_checkpoint(self, path) -> Path:
        """Writes the official format atomically (a reader never sees half a file)."""
        data = self.checkpoint_dict()
        return atomic_write(path, lambda tmp: torch.save(data, tmp))


def _saved_by_torch(path: Path) -> bool:
    """A torch.save file: a zip archive (the format since torch 1.6) or the legacy pickle with torch's magic number."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        head = handle.read(16)
    return head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")


def parameter_count(cfg: BEATsConfig | dict | None = None) -> int:
    """Trainable parameters of a configuration (the tied relative bias once), built on the meta device."""
    with torch.device("meta"):
        model = BEATs(cfg)
    return sum(p.numel() for p in model.parameters())


def state_dict_shapes(cfg: BEATsConfig | dict | None = None) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of a configuration (with the tied copies), built on the meta device."""
    with torch.device("meta"):
        model = BEATs(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
