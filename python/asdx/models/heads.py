"""Pooling and margin heads for BEATs tokens: ASP, GeM, RDP, ArcFace, multi-task ArcFace, center loss, mixup.

Sources: attentive statistics pooling (Okabe et al. 2018), GeM (Radenović et al. 2018), relative
deviation pooling (the beam system, docs/systems/beam.md),
ArcFace (Deng et al. 2019), center loss (Wen et al. 2016), mixup (Zhang et al. 2018).

Token inputs are (batch, tokens, channels). Randomness (mixup) comes from a
seeded generator owned by the object, never from global RNG state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1


def _check_tokens(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"{name}: expected a (batch, tokens, channels) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    if x.shape[1] == 0:
        raise ValueError(f"{name}: no tokens to pool.")


class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling, Okabe et al. 2018: (B, T, C) -> [mu; sigma] (B, 2C).

    e_t = v^T tanh(W h_t + b); alpha = softmax_t(e); mu = sum alpha h;
    sigma = sqrt(sum alpha h^2 - mu^2 + eps). The paper's scalar bias k inside
    the softmax cancels (softmax is shift-invariant), so it is left out.
    """

    def __init__(self, channels: int, attention_dim: int = 128, eps: float = 1e-6):
        super().__init__()
        self.attention = nn.Linear(channels, attention_dim)
        self.score = nn.Linear(attention_dim, 1, bias=False)
        self.eps = eps

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> attention weights (B, T), each row summing to 1."""
        _check_tokens(x)
        return torch.softmax(self.score(torch.tanh(self.attention(x))).squeeze(-1), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.weights(x).unsqueeze(-1)
        mean = (alpha * x).sum(1)
        var = (alpha * x * x).sum(1) - mean * mean
        return torch.cat([mean, torch.sqrt(var.clamp(min=0.0) + self.eps)], dim=1)


class GeMPooling(nn.Module):
    """Generalised mean over tokens (GeM, Radenović et al. 2018): g = (mean_t max(x, eps)^p)^(1/p).

    p is fixed or learnable (init 3).

    Negatives are clamped (transformer features can be negative; the clamp is at a
    small eps, not 0, so the p-th root and a learnable p keep finite gradients).
    p = 1 is the mean of the positive part, p -> inf the max.
    """

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6):
        super().__init__()
        if not p >= 1.0:
            raise ValueError(f"p: expected >= 1, got {p}.")
        p_tensor = torch.tensor(float(p))
        self.p = nn.Parameter(p_tensor) if learnable else None
        if not learnable:
            self.register_buffer("p_fixed", p_tensor)
        self.eps = eps

    @property
    def exponent(self) -> torch.Tensor:
        return self.p if self.p is not None else self.p_fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_tokens(x)
        p = self.exponent.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=1).pow(1.0 / p)


def rdp_pool(tokens, gamma: float = 4.0, eps: float = 1e-8):
    """Relative deviation pooling over time, per frequency band: (clips, time, bands, dim) -> (clips, bands, dim).

    Frames that stray from their band's mean weigh more (anomalies are often short events):
    μ_f = mean_t x[t, f]; d = ‖x[t, f] − μ_f‖; d̂ = d / max_t d (0 when that max ≤ eps);
    w = (1 + d̂)^γ normalised over t; pooled = Σ_t w x. γ = 0 is the plain mean. Parameter-free, so a
    function: torch in, torch out (same device and float dtype); NumPy in, NumPy out (computed in torch).
    Reference: asdx.reference.band_memory.rdp_pool.
    """
    is_numpy = not isinstance(tokens, torch.Tensor)
    x = torch.from_numpy(np.asarray(tokens)) if is_numpy else tokens
    if x.ndim != 4:
        raise ValueError(f"tokens: expected (clips, time, bands, dim), got shape {tuple(x.shape)}.")
    if x.shape[1] == 0:
        raise ValueError("tokens: no time steps to pool.")
    if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma: must be a finite number >= 0, got {gamma!r}.")
    if not x.is_floating_point():
        x = x.double()
    d = torch.linalg.vector_norm(x - x.mean(dim=1, keepdim=True), dim=-1)  # (clips, time, bands)
    top = d.amax(dim=1, keepdim=True)
    d_hat = torch.where(top > eps, d / torch.where(top > eps, top, torch.ones_like(top)), torch.zeros_like(d))
    weights = (1.0 + d_hat).pow(gamma)
    weights = weights / weights.sum(dim=1, keepdim=True)
    pooled = (weights.unsqueeze(-1) * x).sum(dim=1)
    return pooled.numpy() if is_numpy else pooled


class ArcFace(nn.Module):
    """Additive angular margin (ArcFace, Deng et al. 2019): target logit s cos(theta_y + m), others s cos(theta_j).

    Numerically safe at theta = 0 and pi: sin(theta) = sqrt(max(1 - cos^2, eps)),
    so the gradient of the root stays finite; past theta_y + m > pi the target
    logit uses the hard-margin fallback cos(theta) - m sin(m), which keeps the
    logit monotone in theta (easy_margin=True uses cos(theta) for theta > pi/2 instead).
    """

    def __init__(self, in_features: int, n_classes: int, s: float = 30.0, m: float = 0.5,
                 easy_margin: bool = False, eps: float = 1e-7):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes: expected >= 1, got {n_classes}.")
        if not 0.0 <= m < math.pi / 2:
            raise ValueError(f"m: expected a margin in [0, pi/2), got {m}.")
        if not s > 0:
            raise ValueError(f"s: expected > 0, got {s}.")
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m, self.easy_margin, self.eps = float(s), float(m), easy_margin, eps

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> cos(theta_j) (B, classes), clamped to [-1, 1]."""
        if x.ndim != 2 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(f"x: expected (batch, {self.weight.shape[1]}), got {tuple(x.shape)}.")
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)

    def margin_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        """cos(theta + m) with the safe sine and the fallback past pi (applied to every entry given)."""
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(min=self.eps))
        shifted = cosine * math.cos(self.m) - sine * math.sin(self.m)
        if self.easy_margin:
            return torch.where(cosine > 0, shifted, cosine)
        return torch.where(cosine > math.cos(math.pi - self.m), shifted, cosine - self.m * math.sin(self.m))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, classes); with labels the target column gets the margin (labels == IGNORE_INDEX: none)."""
        cosine = self.cosine(x)
        if labels is None:
            return self.s * cosine
        labels = _check_labels(labels, x.shape[0], cosine.shape[1])
        target = F.one_hot(labels.clamp(min=0), cosine.shape[1]).bool() & (labels >= 0).unsqueeze(1)
        return self.s * torch.where(target, self.margin_cosine(cosine), cosine)

    def loss(self, x: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of the margin logits; rows labelled IGNORE_INDEX contribute nothing."""
        logits = self.forward(x, labels)
        per_row = F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
        if reduction == "none":
            return per_row
        valid = labels != IGNORE_INDEX
        return per_row.sum() / valid.sum().clamp(min=1)


def _check_labels(labels: torch.Tensor, batch: int, n_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels: expected ({batch},), got {tuple(labels.shape)}.")
    labels = labels.long()
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        raise ValueError(f"labels: values must be in 0..{n_classes - 1} or {IGNORE_INDEX} (ignore), got "
                         f"{labels[bad][:5].tolist()}.")
    return labels


class MultiTaskArcFace(nn.Module):
    """A main ArcFace head plus auxiliary heads on the same embedding; loss = sum_k w_k CE_k.

    tasks: {name: n_classes}; weights: {name: weight} (default 1). A label equal to
    IGNORE_INDEX (a hidden attribute) removes that row from that head's loss only;
    a head whose rows are all ignored adds 0.
    """

    def __init__(self, in_features: int, tasks: Mapping[str, int], main: str, weights: Mapping[str, float] | None = None,
                 s: float = 30.0, m: float = 0.5):
        super().__init__()
        if main not in tasks:
            raise ValueError(f"main: {main!r} is not one of the tasks {list(tasks)}.")
        weights = dict(weights or {})
        unknown = set(weights) - set(tasks)
        if unknown:
            raise ValueError(f"weights: unknown tasks {sorted(unknown)}.")
        self.main = main
        self.heads = nn.ModuleDict({name: ArcFace(in_features, n, s=s, m=m) for name, n in tasks.items()})
        self.weights = {name: float(weights.get(name, 1.0)) for name in tasks}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Margin-free logits per head (for inference)."""
        return {name: head(x) for name, head in self.heads.items()}

    def loss(self, x: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = set(self.heads) - set(labels)
        if missing:
            raise ValueError(f"labels: no labels for tasks {sorted(missing)}.")
        parts = {name: head.loss(x, torch.as_tensor(labels[name], device=x.device)) for name, head in self.heads.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts


class CenterLoss(nn.Module):
    """Wen et al. 2016: 0.5 * mean_i ||x_i - c_{y_i}||^2 with learnable class centres (rows labelled -1 skipped)."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(n_classes, dim) * 0.01)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = _check_labels(labels, x.shape[0], self.centers.shape[0]).to(x.device)
        valid = labels != IGNORE_INDEX
        if not valid.any():
            return x.sum() * 0.0
        diff = x[valid] - self.centers[labels[valid]]
        return 0.5 * (diff * diff).sum(1).mean()


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al. 2020 (SupCon, L_out): pull same-label clips together on the sphere, push the others away."""
    z = F.normalize(embeddings, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1)
    has = counts > 0
    if not has.any():
        return embeddings.sum() * 0.0
    mean_log_prob = (log_prob * positives).sum(1)[has] / counts[has]
    return -mean_log_prob.mean()


@dataclass
class MixedBatch:
    """Mixup output: x = lam x + (1 - lam) x[perm]; labels of both sources and the per-row lam."""

    x: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: torch.Tensor  # (B,)

    def combine(self, per_row_loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """mean_i lam_i L(labels_a)_i + (1 - lam_i) L(labels_b)_i, for a loss returning per-row values."""
        return (self.lam * per_row_loss(self.labels_a) + (1 - self.lam) * per_row_loss(self.labels_b)).mean()


class Mixup:
    """Mixup (Zhang et al. 2018) with lam ~ Beta(alpha, alpha), applied to a batch with probability `prob`.

    One lam per batch, one random pairing (a permutation). Draws come from a
    numpy Generator seeded here: the same seed gives the same sequence of batches.
    """

    def __init__(self, alpha: float = 0.2, prob: float = 0.5, seed: int = 0):
        if not alpha > 0:
            raise ValueError(f"alpha: expected > 0, got {alpha}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob: expected [0, 1], got {prob}.")
        self.alpha, self.prob = float(alpha), float(prob)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> MixedBatch:
        batch = x.shape[0]
        labels = torch.as_tensor(labels)
        if labels.shape[0] != batch:
            raise ValueError(f"labels: expected {batch} rows, got {labels.shape[0]}.")
        if batch < 2 or self.rng.random() >= self.prob:
            lam = torch.ones(batch, dtype=x.dtype, device=x.device)
            return MixedBatch(x, labels, labels, lam)
        value = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(self.rng.permutation(batch)).to(x.device)
        mixed = value * x + (1.0 - value) * x[perm]
        lam = torch.full((batch,), value, dtype=x.dtype, device=x.device)
        return MixedBatch(mixed, labels, labels[perm.to(labels.device)], lam)
