"""Pooling and margin heads against their direct formulas (ASP, GeM, ArcFace, center loss, mixup)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx.models.heads import (IGNORE_INDEX, ArcFace, AttentiveStatsPooling, CenterLoss, GeMPooling, Mixup,
                               MultiTaskArcFace)


def _tokens(seed=0, shape=(3, 7, 5)):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).double()


# ----------------------------------------------------------------------------- ASP
def test_asp_against_the_direct_formula():
    torch.manual_seed(0)
    pool = AttentiveStatsPooling(5, attention_dim=4).double()
    x = _tokens()
    out = pool(x)
    assert out.shape == (3, 10)
    w, b, v = pool.attention.weight.detach().numpy(), pool.attention.bias.detach().numpy(), \
        pool.score.weight.detach().numpy()[0]
    for i, h in enumerate(x.numpy()):
        e = np.tanh(h @ w.T + b) @ v
        alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
        mu = alpha @ h
        sigma = np.sqrt(alpha @ (h * h) - mu * mu + pool.eps)
        np.testing.assert_allclose(out[i].detach().numpy(), np.concatenate([mu, sigma]), rtol=1e-10, atol=1e-12)


def test_asp_weights_sum_to_one_and_reject_bad_input():
    pool = AttentiveStatsPooling(5).double()
    weights = pool.weights(_tokens())
    assert weights.shape == (3, 7) and (weights > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        pool(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="no tokens"):
        pool(torch.zeros(3, 0, 5))


def test_asp_constant_tokens_give_the_value_and_a_finite_gradient():
    pool = AttentiveStatsPooling(4)
    x = torch.full((2, 6, 4), 0.7, requires_grad=True)
    out = pool(x)
    torch.testing.assert_close(out[:, :4], torch.full((2, 4), 0.7))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- GeM
def test_gem_against_the_direct_formula():
    x = _tokens(1)
    expected = (np.maximum(x.numpy(), 1e-6) ** 3).mean(axis=1) ** (1 / 3)
    np.testing.assert_allclose(GeMPooling(3.0).double()(x).numpy(), expected, rtol=1e-12)


def test_gem_p1_is_the_mean_of_the_positive_part_and_large_p_approaches_max():
    x = _tokens(2).abs() + 0.1
    torch.testing.assert_close(GeMPooling(1.0).double()(x), x.mean(1))
    assert torch.allclose(GeMPooling(200.0).double()(x), x.amax(1), rtol=0.02)
    mixed = _tokens(3)
    torch.testing.assert_close(GeMPooling(1.0).double()(mixed), mixed.clamp(min=1e-6).mean(1))


def test_gem_learnable_p_gets_a_finite_gradient_with_negative_inputs():
    pool = GeMPooling(3.0, learnable=True)
    x = -torch.rand(2, 5, 3)  # all negative: clamped to eps
    pool(x).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad)
    assert GeMPooling(3.0).p is None and not list(GeMPooling(3.0).parameters())
    with pytest.raises(ValueError, match="p"):
        GeMPooling(0.5)


# ----------------------------------------------------------------------------- ArcFace
def test_arcface_against_the_direct_formula():
    torch.manual_seed(0)
    head = ArcFace(6, 4, s=30.0, m=0.5).double()
    x = _tokens(4, (8, 6))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    logits = head(x, labels).detach().numpy()
    xn = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    w = head.weight.detach().numpy()
    cos = xn @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    theta = np.arccos(np.clip(cos, -1, 1))
    expected = 30.0 * cos
    for i, y in enumerate(labels.numpy()):
        t = theta[i, y]
        expected[i, y] = 30.0 * (np.cos(t + 0.5) if t + 0.5 <= math.pi else cos[i, y] - 0.5 * math.sin(0.5))
    np.testing.assert_allclose(logits, expected, rtol=1e-9, atol=1e-9)
    loss = head.loss(x, labels)
    np.testing.assert_allclose(loss.item(), F.cross_entropy(torch.from_numpy(expected), labels).item(), rtol=1e-9)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_arcface_gradients_are_finite_at_theta_zero_and_pi(sign):
    head = ArcFace(4, 3, s=30.0, m=0.5)
    x = (sign * head.weight.detach()[:1].clone()).requires_grad_(True)  # theta_y = 0 or pi exactly
    loss = head.loss(x, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_arcface_hard_margin_fallback_is_used_past_pi():
    head = ArcFace(2, 2, s=1.0, m=0.5)
    cos = torch.tensor([math.cos(math.pi - 0.2), math.cos(1.0)], dtype=torch.float32)
    out = head.margin_cosine(cos)
    torch.testing.assert_close(out[0], cos[0] - 0.5 * math.sin(0.5))
    torch.testing.assert_close(out[1], torch.tensor(math.cos(1.5)))


def test_arcface_ignore_label_and_bad_labels():
    head = ArcFace(4, 3)
    x = torch.randn(3, 4)
    labels = torch.tensor([0, IGNORE_INDEX, 2])
    per_row = head.loss(x, labels, reduction="none")
    assert per_row[1] == 0
    torch.testing.assert_close(head.loss(x, labels), per_row.sum() / 2)
    with pytest.raises(ValueError, match="labels"):
        head(x, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match="m"):
        ArcFace(4, 3, m=2.0)


# ----------------------------------------------------------------------------- multi-task
def test_multitask_weights_and_ignore_label():
    torch.manual_seed(0)
    heads = MultiTaskArcFace(4, {"machine": 3, "attribute": 5}, main="machine", weights={"attribute": 0.25})
    x = torch.randn(4, 4)
    labels = {"machine": torch.tensor([0, 1, 2, 0]), "attribute": torch.tensor([IGNORE_INDEX, 4, IGNORE_INDEX, 1])}
    total, parts = heads.loss(x, labels)
    main = heads.heads["machine"].loss(x, labels["machine"])
    rows = torch.tensor([1, 3])
    aux = heads.heads["attribute"].loss(x[rows], labels["attribute"][rows])
    torch.testing.assert_close(parts["machine"], main)
    torch.testing.assert_close(parts["attribute"], aux)
    torch.testing.assert_close(total, main + 0.25 * aux)
    all_hidden = {"machine": labels["machine"], "attribute": torch.full((4,), IGNORE_INDEX)}
    total, parts = heads.loss(x, all_hidden)
    assert parts["attribute"] == 0
    torch.testing.assert_close(total, main)
    with pytest.raises(ValueError, match="main"):
        MultiTaskArcFace(4, {"a": 2}, main="b")
    with pytest.raises(ValueError, match="labels"):
        heads.loss(x, {"machine": labels["machine"]})


# ----------------------------------------------------------------------------- center loss
def test_center_loss_formula_and_ignore():
    loss = CenterLoss(3, 2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [1.0, 3.0], [5.0, 5.0]])
    labels = torch.tensor([0, 1, IGNORE_INDEX])
    torch.testing.assert_close(loss(x, labels), torch.tensor(0.5 * (1.0 + 4.0) / 2))
    assert loss(x, torch.full((3,), IGNORE_INDEX)) == 0


# ----------------------------------------------------------------------------- mixup
def test_mixup_is_deterministic_per_seed_and_mixes_convexly():
    x = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    labels = torch.arange(6)
    a, b = (Mixup(alpha=0.4, prob=1.0, seed=7)(x, labels) for _ in range(2))
    assert torch.equal(a.x, b.x) and torch.equal(a.labels_b, b.labels_b) and torch.equal(a.lam, b.lam)
    lam = a.lam[0]
    torch.testing.assert_close(a.x, lam * x + (1 - lam) * x[a.labels_b])  # labels are row indices here
    other = Mixup(alpha=0.4, prob=1.0, seed=8)(x, labels)
    assert not torch.equal(other.x, a.x)


def test_mixup_probability_zero_is_identity_and_combine():
    x = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 0])
    state = torch.random.get_rng_state()
    batch = Mixup(prob=0.0, seed=1)(x, labels)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global RNG used
    assert torch.equal(batch.x, x) and torch.equal(batch.labels_b, labels) and (batch.lam == 1).all()
    mixed = Mixup(alpha=1.0, prob=1.0, seed=2)(x, labels)
    per_label = {0: torch.tensor([1.0, 2, 3, 4]), 1: torch.tensor([10.0, 20, 30, 40])}
    calls = iter([per_label[0], per_label[1]])
    value = mixed.combine(lambda _labels: next(calls))
    torch.testing.assert_close(value, (mixed.lam * per_label[0] + (1 - mixed.lam) * per_label[1]).mean())


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 4.0), st.integers(0, 2**31 - 1))
def test_mixup_lambda_in_unit_interval(alpha, seed):
    batch = Mixup(alpha=alpha, prob=1.0, seed=seed)(torch.randn(5, 2), torch.arange(5))
    assert ((batch.lam >= 0) & (batch.lam <= 1)).all()
    assert sorted(batch.labels_b.tolist()) == list(range(5))
