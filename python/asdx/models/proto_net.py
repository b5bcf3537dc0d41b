"""The P_proto network: a stereo/spatial CNN and frozen BEATs tokens fused into a 256-d clip embedding.

DCASE 2026 Task 2 technical report §2.2 describes the system in one paragraph: a
trainable CNN with multi-scale feature extraction (MSFE) on stereo log-mel energies
and spatial cues (ILD, ITD, IPD, mid-side summaries), a frozen BEATs encoder on the
near-microphone waveform, three similarity-guided feature fusion (SGFF) blocks plus
learnable scale fusion, FiLM conditioning, a Conformer stack, a 256-dimensional clip
embedding, about 70 M parameters. Everything else is a choice made here:

  bands (B, 7, T, M) + gcc (B, T, 2)
    -> InputNorm: per (channel, mel band) batch norm; the GCC-PHAT lag / max_lag and
       the peak height, batch-normed, broadcast over the mel axis as two more planes
    -> CNNBranch: one MSFE block + (time, freq) average pooling per stage; stage i
       is read out as a sequence (B, T_i, channels_i * mel_i)
  tokens (B, T' * 8, D) -> BEATsAdapter: LayerNorm, the 8 frequency patches of a
       time patch concatenated and projected -> (B, T', d_model)
    -> one SGFF per stage, the BEATs sequence first aligned to T_i (align_time)
    -> ScaleFusion: the stage outputs pooled to the last stage's length, softmax mix
    -> FiLM(domain, attribute) -> Conformer blocks -> attentive statistics pooling
    -> Linear -> (B, 256)

ProtoNetConfig.full() has 69.8 M trainable parameters besides BEATs (`parameter_count`;
`parameter_breakdown` splits them: Conformer 9 x 512 54.5 M, SGFF 9.5 M, BEATs adapter
3.1 M, CNN 2.2 M, the rest 0.5 M). The Conformer runs at the last CNN stage's rate,
T / 8: ~40 steps (256 ms each) per 10 s clip.
The network never runs BEATs: the system feeds its (frozen, possibly cached) tokens.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asdx.models.heads import ArcFace, AttentiveStatsPooling, CenterLoss, supervised_contrastive

N_BAND_CHANNELS = 7  # asdx.features.stereo.BAND_CHANNELS
NEAR_FAR = 2  # bands[:, 0] near_logmel, bands[:, 1] far_logmel: all that use_spatial=False reads


# --------------------------------------------------------------------------- config
@dataclass
class ProtoNetConfig:
    """Widths and depths of ProtoNet; `full()` is the ~70 M report size, `tiny()` a CPU test size.

    cnn_channels / time_pool / freq_pool: one entry per CNN stage, i.e. per SGFF block
    (the report has three). msfe_dilations: the parallel 3x3 branches of every MSFE block.
    n_attributes: embedding rows for the attribute index, 0 = unknown/hidden included.
    n_domains: 2 (0 source, 1 target); a system may add a value for "unknown".
    use_spatial=False (ablation): only near_logmel and far_logmel are read; ILD, IPD,
    mid/side and GCC are never touched (gcc may then be None).
    """

    n_mels: int = 128
    cnn_channels: tuple[int, ...] = (80, 160, 320)
    msfe_dilations: tuple[int, ...] = (1, 2, 4)
    time_pool: tuple[int, ...] = (2, 2, 2)
    freq_pool: tuple[int, ...] = (2, 2, 2)
    max_lag: float = 320.0  # GCC-PHAT search range of stereo_features (samples), used to scale the lag
    beats_dim: int = 768
    beats_bands: int = 8  # frequency patches per BEATs time patch (128 fbank bins / 16)
    d_model: int = 512
    similarity_heads: int = 8
    conformer_layers: int = 9
    conformer_heads: int = 8
    ffn_mult: int = 4
    conv_kernel: int = 31
    dropout: float = 0.1
    cond_dim: int = 128
    n_domains: int = 2
    n_attributes: int = 16
    pool_attention_dim: int = 128
    embedding_dim: int = 256
    use_spatial: bool = True

    def __post_init__(self):
        for name in ("cnn_channels", "msfe_dilations", "time_pool", "freq_pool"):
            value = tuple(int(v) for v in getattr(self, name))
            if not value or min(value) < 1:
                raise ValueError(f"{name}: expected a non-empty tuple of positive ints, got {getattr(self, name)!r}.")
            setattr(self, name, value)
        if not len(self.cnn_channels) == len(self.time_pool) == len(self.freq_pool):
            raise ValueError(f"cnn_channels, time_pool, freq_pool: expected one entry per stage each, got "
                             f"{len(self.cnn_channels)}, {len(self.time_pool)}, {len(self.freq_pool)}.")
        for name in ("n_mels", "beats_dim", "beats_bands", "d_model", "similarity_heads", "conformer_heads",
                     "ffn_mult", "conv_kernel", "cond_dim", "n_domains", "n_attributes", "pool_attention_dim",
                     "embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}.")
        if self.conformer_layers < 0:
            raise ValueError(f"conformer_layers: expected >= 0, got {self.conformer_layers}.")
        for name in ("similarity_heads", "conformer_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"{name}: {getattr(self, name)} does not divide d_model {self.d_model}.")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel: expected an odd size ('same' padding), got {self.conv_kernel}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected [0, 1), got {self.dropout}.")
        if not self.max_lag > 0:
            raise ValueError(f"max_lag: expected > 0, got {self.max_lag}.")

    @classmethod
    def full(cls, **overrides) -> "ProtoNetConfig":
        """The report size: ~70 M trainable parameters besides BEATs (BEATs Base tokens, D = 768)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "ProtoNetConfig":
        """A few ten thousand parameters for tests and the demo (random-tiny BEATs tokens, D = 64)."""
        values = dict(cnn_channels=(4, 8, 16), msfe_dilations=(1, 2), beats_dim=64, d_model=32, similarity_heads=4,
                      conformer_layers=1, conformer_heads=2, ffn_mult=2, conv_kernel=7, dropout=0.0, cond_dim=8,
                      n_attributes=4, pool_attention_dim=16)
        values.update(overrides)
        return cls(**values)

    @property
    def in_channels(self) -> int:
        """CNN input planes: 7 bands + 2 GCC planes, or near/far only."""
        return N_BAND_CHANNELS + 2 if self.use_spatial else NEAR_FAR

    def stage_mels(self) -> list[int]:
        """Mel bins left after each stage's pooling (ceil, as the pooling uses ceil_mode)."""
        out, m = [], self.n_mels
        for p in self.freq_pool:
            m = math.ceil(m / p)
            out.append(m)
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers
def _normal_(tensor: torch.Tensor, std: float) -> None:
    """nn.init.normal_, skipped on the meta device (there torch routes it through torch._dynamo: seconds to import)."""
    if not tensor.is_meta:
        nn.init.normal_(tensor, std=std)


def align_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, C) -> (B, length, C): average pooling when shrinking, linear interpolation when growing.

    Any pair of lengths works, so for a clip of any duration the BEATs time patches
    (160 ms each, 6.25 per s) line up with a CNN stage (31.25 / 2^i frames per s).
    """
    if x.shape[1] == length:
        return x
    y = x.transpose(1, 2)
    if x.shape[1] > length:
        y = F.adaptive_avg_pool1d(y, length)
    else:
        y = F.interpolate(y, size=length, mode="linear", align_corners=False)
    return y.transpose(1, 2)


# --------------------------------------------------------------------------- input
class InputNorm(nn.Module):
    """Puts log-mel dB, ILD dB, cos/sin and GCC lags on one scale: (bands, gcc) -> (B, C, T, M).

    Every (channel, mel band) pair gets its own batch norm (statistics over batch and
    time), as per-frequency normalisation is usual for DCASE log-mel inputs. The GCC-PHAT
    lag (ITD cue, Knapp & Carter 1976) is divided by max_lag, then both cues are batch
    normed and broadcast over the mel axis as two extra planes. With use_spatial=False
    only bands[:, :2] is sliced out and gcc is never read.
    """

    def __init__(self, config: ProtoNetConfig):
        super().__init__()
        self.use_spatial = config.use_spatial
        self.max_lag = float(config.max_lag)
        channels = N_BAND_CHANNELS if config.use_spatial else NEAR_FAR
        self.bands_norm = nn.BatchNorm1d(channels * config.n_mels)
        self.gcc_norm = nn.BatchNorm1d(2) if config.use_spatial else None

    def forward(self, bands: torch.Tensor, gcc: torch.Tensor | None) -> torch.Tensor:
        if not self.use_spatial:
            bands = bands[:, :NEAR_FAR]
        b, c, t, m = bands.shape
        x = self.bands_norm(bands.permute(0, 1, 3, 2).reshape(b, c * m, t))
        x = x.reshape(b, c, m, t).permute(0, 1, 3, 2)
        if not self.use_spatial:
            return x
        cues = torch.stack([gcc[..., 0] / self.max_lag, gcc[..., 1]], dim=1)  # (B, 2, T)
        cues = self.gcc_norm(cues).unsqueeze(-1).expand(b, 2, t, m)
        return torch.cat([x, cues], dim=1)


# --------------------------------------------------------------------------- CNN branch
class MSFE(nn.Module):
    """Multi-scale feature extraction: parallel dilated 3x3 convolutions, concatenated, merged by a 1x1 conv.

    "MSFE" names the idea of extracting features at several receptive fields at the
    same depth and merging them: parallel kernels as in Inception (Szegedy et al. 2015,
    "Going deeper with convolutions"), here realised with dilations (Yu & Koltun 2016,
    "Multi-scale context aggregation by dilated convolutions"), which widen the field
    (3, 5, 9 bins for dilations 1, 2, 4) at the cost of a 3x3. The report names the
    block without details; branch layout, the 1x1 merge and the residual are ours.
    (B, C_in, T, F) -> (B, C_out, T, F).
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU())
            for d in dilations)
        self.merge = nn.Sequential(nn.Conv2d(out_channels * len(dilations), out_channels, 1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = self.merge(torch.cat([branch(x) for branch in self.branches], dim=1))
        return F.relu(merged + self.skip(x))


class CNNBranch(nn.Module):
    """Trainable stereo/spatial CNN: per stage one MSFE then (time, freq) average pooling.

    Returns every stage read out as a sequence (B, T_i, C_i * F_i): the frequency
    layout is kept (flattened), since where in frequency a cue sits matters for
    machine sounds. Pooling uses ceil_mode so any clip length keeps >= 1 frame.
    """

    def __init__(self, config: ProtoNetConfig):
        super().__init__()
        widths = (config.in_channels,) + config.cnn_channels
        self.blocks = nn.ModuleList(MSFE(widths[i], widths[i + 1], config.msfe_dilations)
                                    for i in range(len(config.cnn_channels)))
        self.pools = nn.ModuleList(nn.AvgPool2d((tp, fp), ceil_mode=True)
                                   for tp, fp in zip(config.time_pool, config.freq_pool))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
            b, c, t, f = x.shape
            out.append(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return out


# --------------------------------------------------------------------------- BEATs branch
class BEATsAdapter(nn.Module):
    """Frozen BEATs tokens (B, T' * bands, D) -> one vector per time patch (B, T', d_model).

    BEATs orders tokens time-major (index t * bands + f, Chen et al. 2023, "BEATs:
    Audio Pre-Training with Acoustic Tokenizers"); the `bands` frequency patches of a
    time patch are layer-normed, concatenated and projected, keeping their frequency
    identity instead of averaging it away.
    """

    def __init__(self, config: ProtoNetConfig):
        super().__init__()
        self.bands = config.beats_bands
        self.norm = nn.LayerNorm(config.beats_dim)
        self.proj = nn.Linear(config.beats_bands * config.beats_dim, config.d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        x = self.norm(tokens).reshape(b, n // self.bands, self.bands * d)
        return F.gelu(self.proj(x))


# --------------------------------------------------------------------------- fusion
class SGFF(nn.Module):
    """Similarity-guided feature fusion of a CNN-stage sequence and the time-aligned BEATs sequence.

    The report names SGFF without defining it; the design here is ours: a gated
    fusion in the manner of Gated Multimodal Units (Arevalo et al. 2017, "Gated
    multimodal units for information fusion"), except that the gate sees only how
    similar the two branches are. Both inputs are projected and layer-normed to
    d_model, split into `heads` channel groups, and the per-frame cosine similarity
    of each group pair, s (B, T, heads), gives per-channel weights
    g = sigmoid(W s + b); the output is Linear(g * cnn + (1 - g) * beats). Where the
    branches agree the mix is whatever the data favour; where they disagree the gate
    learns which one to trust. (B, T, cnn_dim), (B, T, beats_dim) -> (B, T, d_model).
    """

    def __init__(self, cnn_dim: int, beats_dim: int, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.cnn_proj = nn.Sequential(nn.Linear(cnn_dim, d_model), nn.LayerNorm(d_model))
        self.beats_proj = nn.Sequential(nn.Linear(beats_dim, d_model), nn.LayerNorm(d_model))
        self.gate = nn.Linear(heads, d_model)
        self.out = nn.Linear(d_model, d_model)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-frame, per-group cosine similarity of the projected branches: (B, T, heads)."""
        shape = a.shape[:-1] + (self.heads, -1)
        return F.cosine_similarity(a.reshape(shape), b.reshape(shape), dim=-1)

    def _project(self, cnn: torch.Tensor, beats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = self.cnn_proj(cnn), self.beats_proj(beats)
        return a, b, torch.sigmoid(self.gate(self.similarity(a, b)))

    def weights(self, cnn: torch.Tensor, beats: torch.Tensor) -> torch.Tensor:
        """The CNN branch's fusion weight g (B, T, d_model); the BEATs branch gets 1 - g."""
        return self._project(cnn, beats)[2]

    def forward(self, cnn: torch.Tensor, beats: torch.Tensor) -> torch.Tensor:
        a, b, g = self._project(cnn, beats)
        return self.out(g * a + (1.0 - g) * b)


class ScaleFusion(nn.Module):
    """Learnable scale fusion: the SGFF outputs, pooled to one time length and layer-normed, mixed by softmax weights.

    A softmax-normalised learnable weight per scale, as ELMo's scalar mix of layers
    (Peters et al. 2018, "Deep contextualized word representations"). Each scale is
    first brought to the target length with align_time (the last, coarsest stage)
    and layer-normed so no scale wins by magnitude alone. [(B, T_i, d)] -> (B, T, d).
    """

    def __init__(self, n_scales: int, d_model: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_scales))
        self.logits = nn.Parameter(torch.zeros(n_scales))

    def mix_weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, scales: list[torch.Tensor]) -> torch.Tensor:
        length = scales[-1].shape[1]
        weights = self.mix_weights()
        return sum(w * norm(align_time(x, length)) for w, norm, x in zip(weights, self.norms, scales))


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018, "FiLM: Visual reasoning with a general conditioning layer").

    The condition is the sum of a domain embedding and an attribute embedding (row 0
    = unknown/hidden attribute, itself learned); a linear layer maps it to per-channel
    gamma, beta and x -> (1 + gamma) * x + beta. The map starts small (std 0.02) so
    the block begins near the identity while every embedding still gets a gradient.
    (B, T, d), (B,), (B,) -> (B, T, d).
    """

    def __init__(self, d_model: int, cond_dim: int, n_domains: int, n_attributes: int):
        super().__init__()
        # _weight: nn.Embedding's own N(0, 1) init, done by _normal_ so that it is skipped on the meta device
        self.domain = nn.Embedding(n_domains, cond_dim, _weight=torch.empty(n_domains, cond_dim))
        self.attribute = nn.Embedding(n_attributes, cond_dim, _weight=torch.empty(n_attributes, cond_dim))
        self.to_gamma_beta = nn.Linear(cond_dim, 2 * d_model)
        for table in (self.domain.weight, self.attribute.weight):
            _normal_(table, std=1.0)
        _normal_(self.to_gamma_beta.weight, std=0.02)
        nn.init.zeros_(self.to_gamma_beta.bias)

    def forward(self, x: torch.Tensor, domain: torch.Tensor, attribute: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_gamma_beta(self.domain(domain) + self.attribute(attribute)).chunk(2, dim=-1)
        return (1.0 + gamma.unsqueeze(1)) * x + beta.unsqueeze(1)


# --------------------------------------------------------------------------- Conformer
class FeedForwardModule(nn.Module):
    """Conformer feed-forward module (Gulati et al. 2020): LayerNorm, Linear, Swish, dropout, Linear, dropout."""

    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, mult * d_model), nn.SiLU(),
                                 nn.Dropout(dropout), nn.Linear(mult * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiHeadSelfAttention(nn.Module):
    """Pre-LN multi-head self-attention (Vaswani et al. 2017) as used in the Conformer block.

    Gulati et al. 2020 use Transformer-XL relative positions; here, as in torchaudio's
    Conformer, attention has no positional term and the convolution module supplies
    relative position. The key projection has no bias: a key bias only shifts every
    score of a query equally, which softmax ignores (its gradient is exactly zero).
    """

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm(x)
        q, k, v = (proj(h).reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))


class ConvolutionModule(nn.Module):
    """Conformer convolution module (Gulati et al. 2020): LN, pointwise + GLU, depthwise, BN, Swish, pointwise.

    The depthwise conv has no bias since the batch norm right after it removes one.
    """

    def __init__(self, d_model: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model, bias=False)
        self.bn = nn.BatchNorm1d(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)
        y = F.silu(self.bn(self.depthwise(y)))
        return self.drop(self.pointwise_out(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    """Conformer block (Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for speech recognition").

    x + FFN/2, + MHSA, + Conv, + FFN/2, then LayerNorm (the macaron layout). (B, T, d) -> (B, T, d).
    """

    def __init__(self, d_model: int, heads: int, ffn_mult: int, kernel: int, dropout: float):
        super().__init__()
        self.ffn1 = FeedForwardModule(d_model, ffn_mult, dropout)
        self.attention = MultiHeadSelfAttention(d_model, heads, dropout)
        self.conv = ConvolutionModule(d_model, kernel, dropout)
        self.ffn2 = FeedForwardModule(d_model, ffn_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attention(x)
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


# --------------------------------------------------------------------------- network
class EmbeddingHead(nn.Module):
    """Attentive statistics pooling (Okabe et al. 2018) over time, then a linear map to the clip embedding."""

    def __init__(self, d_model: int, attention_dim: int, embedding_dim: int):
        super().__init__()
        self.pool = AttentiveStatsPooling(d_model, attention_dim)
        self.proj = nn.Linear(2 * d_model, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class ProtoNet(nn.Module):
    """P_proto's network (DCASE 2026 Task 2 technical report §2.2); see the module docstring for the layout.

    forward(bands, gcc, tokens, domain, attribute) -> (B, embedding_dim):
      bands (B, 7, T, n_mels): asdx.features.stereo_features(...).bands (near, far,
        ILD, IPD cos, IPD sin, mid, side; hop 512 at 16 kHz);
      gcc (B, T, 2): stereo_features(...).gcc (GCC-PHAT lag in samples, peak height);
        ignored (may be None) when use_spatial is False;
      tokens (B, T' * beats_bands, beats_dim): frozen BEATs tokens of the near channel;
      domain (B,) long in [0, n_domains); attribute (B,) long in [0, n_attributes), 0 = unknown.
    T and T' need not match: the BEATs sequence is aligned to every CNN stage.
    """

    def __init__(self, config: ProtoNetConfig | None = None):
        super().__init__()
        self.config = config = config or ProtoNetConfig.full()
        self.input = InputNorm(config)
        self.cnn = CNNBranch(config)
        self.beats = BEATsAdapter(config)
        cnn_dims = [c * m for c, m in zip(config.cnn_channels, config.stage_mels())]
        self.sgff = nn.ModuleList(SGFF(dim, config.d_model, config.d_model, config.similarity_heads)
                                  for dim in cnn_dims)
        self.scale_fusion = ScaleFusion(len(cnn_dims), config.d_model)
        self.film = FiLM(config.d_model, config.cond_dim, config.n_domains, config.n_attributes)
        self.conformer = nn.ModuleList(
            ConformerBlock(config.d_model, config.conformer_heads, config.ffn_mult, config.conv_kernel, config.dropout)
            for _ in range(config.conformer_layers))
        self.head = EmbeddingHead(config.d_model, config.pool_attention_dim, config.embedding_dim)

    def forward(self, bands: torch.Tensor, gcc: torch.Tensor | None, tokens: torch.Tensor, domain: torch.Tensor,
                attribute: torch.Tensor) -> torch.Tensor:
        self._check(bands, gcc, tokens, domain, attribute)
        stages = self.cnn(self.input(bands, gcc))
        beats = self.beats(tokens)
        fused = [sgff(x, align_time(beats, x.shape[1])) for sgff, x in zip(self.sgff, stages)]
        h = self.film(self.scale_fusion(fused), domain, attribute)
        for block in self.conformer:
            h = block(h)
        return self.head(h)

    def _check(self, bands, gcc, tokens, domain, attribute) -> None:
        cfg = self.config
        if bands.ndim != 4 or bands.shape[1] != N_BAND_CHANNELS or bands.shape[3] != cfg.n_mels:
            raise ValueError(f"bands: expected (batch, {N_BAND_CHANNELS}, frames, {cfg.n_mels}), "
                             f"got {tuple(bands.shape)}.")
        batch, frames = bands.shape[0], bands.shape[2]
        if cfg.use_spatial and (gcc is None or tuple(gcc.shape) != (batch, frames, 2)):
            raise ValueError(f"gcc: expected ({batch}, {frames}, 2), got "
                             f"{None if gcc is None else tuple(gcc.shape)}.")
        if (tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[2] != cfg.beats_dim
                or tokens.shape[1] == 0 or tokens.shape[1] % cfg.beats_bands):
            raise ValueError(f"tokens: expected ({batch}, time_patches * {cfg.beats_bands}, {cfg.beats_dim}), "
                             f"got {tuple(tokens.shape)}.")
        for name, value, n in (("domain", domain, cfg.n_domains), ("attribute", attribute, cfg.n_attributes)):
            if value.shape != (batch,) or value.dtype != torch.long:
                raise ValueError(f"{name}: expected a ({batch},) long tensor, got {tuple(value.shape)} {value.dtype}.")
            if batch and (int(value.min()) < 0 or int(value.max()) >= n):
                raise ValueError(f"{name}: values must be in 0..{n - 1}, got {value.tolist()[:8]}.")


# --------------------------------------------------------------------------- training
class ProtoModel(nn.Module):
    """ProtoNet and the training heads of one loss family; forward gives the per-clip loss.

    n_groups: the number of prototype groups when the attributes are visible (ArcFace over the groups plus
    center loss); None for domain-only groups (supervised contrastive over the domains plus a domain
    cross-entropy). The loss is computed inside forward so that DistributedDataParallel, which wraps this
    module, averages the heads' gradients along with the network's.
    """

    def __init__(self, config: ProtoNetConfig, n_groups: int | None, *, arcface_s: float = 30.0,
                 arcface_m: float = 0.5, center_weight: float = 1.0, temperature: float = 0.1,
                 domain_weight: float = 1.0):
        super().__init__()
        self.net = ProtoNet(config)
        self.visible = n_groups is not None
        self.center_weight, self.temperature, self.domain_weight = center_weight, temperature, domain_weight
        dim = config.embedding_dim
        if self.visible:
            self.arcface = ArcFace(dim, n_groups, s=arcface_s, m=arcface_m)
            self.center = CenterLoss(n_groups, dim)
        else:
            self.domain_head = nn.Linear(dim, 2)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Per-clip loss (B,) of the model's family (a batch-level term is spread over the clips)."""
        if self.visible:
            centre = self.center(F.normalize(embeddings, dim=1), labels)
            return self.arcface.loss(embeddings, labels, reduction="none") + self.center_weight * centre
        contrastive = supervised_contrastive(embeddings, domains, self.temperature)
        cross_entropy = F.cross_entropy(self.domain_head(embeddings), domains, reduction="none")
        return contrastive + self.domain_weight * cross_entropy

    def forward(self, bands, gcc, tokens, conditions, labels, domains, perm=None, lam: float = 1.0,
                autocast: bool = False) -> torch.Tensor:
        """conditions (B, 2): (domain, attribute) indices; labels: group indices; perm, lam: a mixup's pairing."""
        with torch.autocast(device_type=bands.device.type, dtype=torch.bfloat16, enabled=autocast):
            embeddings = self.net(bands, gcc, tokens, conditions[:, 0], conditions[:, 1]).float()
        loss = self.loss(embeddings, labels, domains)
        if perm is not None:  # mixup: the losses of both sources, weighted by lambda
            loss = lam * loss + (1 - lam) * self.loss(embeddings, labels[perm], domains[perm])
        return loss


# --------------------------------------------------------------------------- counts
def _meta_model(config: ProtoNetConfig | None) -> ProtoNet:
    with torch.device("meta"):
        return ProtoNet(config or ProtoNetConfig.full())


def parameter_count(config: ProtoNetConfig | None = None) -> int:
    """Trainable parameters of a configuration (BEATs not included), built on the meta device."""
    return sum(p.numel() for p in _meta_model(config).parameters() if p.requires_grad)


def parameter_breakdown(config: ProtoNetConfig | None = None) -> dict[str, int]:
    """Trainable parameters per top-level block (input, cnn, beats, sgff, scale_fusion, film, conformer, head)."""
    model = _meta_model(config)
    return {name: sum(p.numel() for p in child.parameters() if p.requires_grad)
            for name, child in model.named_children()}
