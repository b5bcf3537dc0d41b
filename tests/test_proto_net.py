"""ProtoNet (P_proto's network): block shapes, gradients, size, ablation.

P_proto is § 2.2 of the report
"Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2".
"""

import math

import numpy as np
import pytest
import torch

from asdx.models.beats import BEATs, tiny_config
from asdx.models.proto_net import (MSFE, SGFF, BEATsAdapter, CNNBranch, ConformerBlock, EmbeddingHead, FiLM,
                                   InputNorm, ProtoNet, ProtoNetConfig, ScaleFusion, align_time, parameter_breakdown,
                                   parameter_count)

TINY = ProtoNetConfig.tiny()
SR, HOP = 16000, 512


def _frames(seconds):
    return 1 + int(seconds * SR) // HOP


def _time_patches(seconds):
    return ((int(seconds * SR) - 400) // 160 + 1) // 16  # BEATs fbank frames (25 ms / 10 ms) // patch size


def _inputs(cfg=TINY, batch=2, seconds=1.0, seed=0):
    """Random inputs on the scales stereo_features and BEATs produce."""
    g = torch.Generator().manual_seed(seed)
    t, n = _frames(seconds), _time_patches(seconds) * cfg.beats_bands

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    angle = torch.rand(batch, t, cfg.n_mels, generator=g) * 2 * math.pi
    bands = torch.stack([randn(batch, t, cfg.n_mels) * 15 - 40, randn(batch, t, cfg.n_mels) * 15 - 45,
                         randn(batch, t, cfg.n_mels) * 5, angle.cos(), angle.sin(),
                         randn(batch, t, cfg.n_mels) * 15 - 40, randn(batch, t, cfg.n_mels) * 15 - 50], dim=1)
    gcc = torch.stack([torch.randint(-320, 321, (batch, t), generator=g).float(),
                       torch.rand(batch, t, generator=g)], dim=-1)
    tokens = randn(batch, n, cfg.beats_dim)
    domain = torch.randint(0, cfg.n_domains, (batch,), generator=g)
    attribute = torch.randint(0, cfg.n_attributes, (batch,), generator=g)
    return bands, gcc, tokens, domain, attribute


def _assert_every_parameter_learns(module, out, seed=1):
    """A scalar loss on `out` gives every trainable parameter a finite, non-zero gradient.

    The loss weights the output with fixed random numbers: a plain sum would give
    zero gradients behind any LayerNorm (its outputs sum to a constant). "Non-zero"
    means above 1e-5: a parameter whose exact gradient is 0 (a bias right before a
    batch norm, an attention key bias) still shows float32 rounding noise of ~1e-7,
    while the live gradients here are >= ~1e-2.
    """
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    module.zero_grad(set_to_none=True)
    (out * weights).sum().backward()
    dead = [name for name, p in module.named_parameters()
            if p.requires_grad
            and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().max() > 1e-5)]
    assert not dead, f"no (finite, non-zero) gradient for {dead}"


# ----------------------------------------------------------------------------- config and size
def test_full_size_is_about_70m_and_tiny_is_small():
    full = parameter_count(ProtoNetConfig.full())
    assert abs(full - 70e6) <= 0.1 * 70e6, full
    assert sum(parameter_breakdown(ProtoNetConfig.full()).values()) == full
    tiny = ProtoNet(TINY)
    assert sum(p.numel() for p in tiny.parameters()) == parameter_count(TINY) <= 300_000
    assert ProtoNetConfig.full().embedding_dim == TINY.embedding_dim == 256


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="one entry per stage"):
        ProtoNetConfig.tiny(time_pool=(2, 2))
    with pytest.raises(ValueError, match="does not divide"):
        ProtoNetConfig.tiny(conformer_heads=3)
    with pytest.raises(ValueError, match="odd"):
        ProtoNetConfig.tiny(conv_kernel=4)
    assert ProtoNetConfig.tiny(cnn_channels=[2, 3, 4]).cnn_channels == (2, 3, 4)


def test_same_seed_gives_the_same_init():
    torch.manual_seed(3)
    a = ProtoNet(TINY).state_dict()
    torch.manual_seed(3)
    b = ProtoNet(TINY).state_dict()
    torch.manual_seed(4)
    c = ProtoNet(TINY).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ----------------------------------------------------------------------------- blocks
def test_align_time_shrinks_grows_and_keeps_constants():
    x = torch.randn(2, 7, 3)
    assert align_time(x, 7) is x
    for length in (1, 3, 16):
        assert align_time(x, length).shape == (2, length, 3)
    const = torch.full((1, 6, 2), 0.25)
    for length in (2, 4, 13):
        torch.testing.assert_close(align_time(const, length), torch.full((1, length, 2), 0.25))
    torch.testing.assert_close(align_time(torch.arange(4.0).reshape(1, 4, 1), 2).flatten(), torch.tensor([0.5, 2.5]))


def test_input_norm_normalises_each_channel_and_broadcasts_gcc():
    bands, gcc, *_ = _inputs(batch=4)
    norm = InputNorm(TINY).train()
    x = norm(bands, gcc)
    assert x.shape == (4, 9, bands.shape[2], TINY.n_mels)
    means = x.mean(dim=(0, 2, 3))
    assert means.abs().max() < 1e-4  # dB, cos/sin and lags all centred (batch stats at init)
    torch.testing.assert_close(x[:, 7:, :, 0:1].expand_as(x[:, 7:]), x[:, 7:])  # GCC planes constant over mels
    _assert_every_parameter_learns(norm, x)
    near_far = InputNorm(ProtoNetConfig.tiny(use_spatial=False))(bands, None)
    assert near_far.shape == (4, 2, bands.shape[2], TINY.n_mels)


def test_msfe_shape_and_gradient():
    block = MSFE(4, 6, (1, 2, 4))
    x = torch.randn(2, 4, 10, 16)
    out = block(x)
    assert out.shape == (2, 6, 10, 16)
    _assert_every_parameter_learns(block, out)


def test_cnn_branch_stage_sequences():
    branch = CNNBranch(TINY)
    t = _frames(1.0)
    stages = branch(torch.randn(2, TINY.in_channels, t, TINY.n_mels))
    assert [s.shape for s in stages] == [(2, math.ceil(t / 2 ** (i + 1)), c * m)
                                         for i, (c, m) in enumerate(zip(TINY.cnn_channels, TINY.stage_mels()))]
    _assert_every_parameter_learns(branch, torch.cat([s.flatten(1) for s in stages], dim=1))


def test_beats_adapter_keeps_time_patches():
    adapter = BEATsAdapter(TINY)
    tokens = torch.randn(2, 5 * TINY.beats_bands, TINY.beats_dim)
    out = adapter(tokens)
    assert out.shape == (2, 5, TINY.d_model)
    _assert_every_parameter_learns(adapter, out)
    # time patch t holds tokens t*8 .. t*8+7: changing patch 2 changes only output row 2
    changed = tokens.clone()
    changed[:, 2 * TINY.beats_bands:3 * TINY.beats_bands] += 1.0
    diff = (adapter(changed) - out).abs().sum(dim=(0, 2))
    assert diff[2] > 0 and diff[[0, 1, 3, 4]].max() == 0


def test_sgff_shape_gradient_and_similarity_guided_weights():
    torch.manual_seed(0)
    block = SGFF(24, 16, 16, heads=4)
    cnn, beats = torch.randn(2, 9, 24), torch.randn(2, 9, 16)
    out = block(cnn, beats)
    assert out.shape == (2, 9, 16)
    _assert_every_parameter_learns(block, out)
    w = block.weights(cnn, beats)
    assert w.shape == (2, 9, 16) and ((w > 0) & (w < 1)).all()
    # the weights follow the branches' similarity: changing either branch changes them ...
    assert not torch.allclose(block.weights(cnn, torch.randn(2, 9, 16)), w)
    assert not torch.allclose(block.weights(torch.randn(2, 9, 24), beats), w)
    # ... frame by frame: only the frame whose BEATs input changed gets new weights
    changed = beats.clone()
    changed[:, 4] = torch.randn(2, 16)
    moved = (block.weights(cnn, changed) - w).abs().sum(dim=(0, 2))
    assert moved[4] > 0 and torch.cat([moved[:4], moved[5:]]).max() == 0
    # ... and through the similarity alone: a frame whose branches agree perfectly gets gate(cos = 1)
    a, b = block.cnn_proj(cnn), block.beats_proj(beats)
    torch.testing.assert_close(block.similarity(a, a), torch.ones(2, 9, 4))
    torch.testing.assert_close(w, torch.sigmoid(block.gate(block.similarity(a, b))))


def test_scale_fusion_aligns_and_mixes_with_softmax_weights():
    torch.manual_seed(0)
    fusion = ScaleFusion(3, 8)
    scales = [torch.randn(2, 16, 8), torch.randn(2, 8, 8), torch.randn(2, 4, 8)]
    out = fusion(scales)
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(fusion.mix_weights().sum(), torch.tensor(1.0))
    _assert_every_parameter_learns(fusion, out)
    assert fusion.logits.grad.abs().min() > 0
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, -30.0, -30.0]))  # all weight on the finest scale
    torch.testing.assert_close(fusion(scales), fusion.norms[0](align_time(scales[0], 4)), atol=1e-5, rtol=0)


def test_film_conditions_on_domain_and_attribute():
    torch.manual_seed(0)
    film = FiLM(8, 4, n_domains=2, n_attributes=3)
    x = torch.randn(3, 5, 8)
    domain, attribute = torch.tensor([0, 1, 1]), torch.tensor([0, 2, 1])
    out = film(x, domain, attribute)
    assert out.shape == x.shape
    _assert_every_parameter_learns(film, out)
    assert not torch.allclose(film(x, 1 - domain, attribute), out)
    assert not torch.allclose(film(x, domain, torch.tensor([1, 0, 2])), out)
    with torch.no_grad():
        film.to_gamma_beta.weight.zero_()
    torch.testing.assert_close(film(x, domain, attribute), x)  # gamma = beta = 0: identity


def test_conformer_block_shape_and_gradient():
    torch.manual_seed(0)
    block = ConformerBlock(16, heads=4, ffn_mult=2, kernel=5, dropout=0.0).train()
    x = torch.randn(2, 7, 16)
    out = block(x)
    assert out.shape == (2, 7, 16)
    _assert_every_parameter_learns(block, out)
    # the convolution module sees neighbours: frame 0 depends on frame 2 even with attention removed
    block.eval()
    y = torch.randn(1, 7, 16, requires_grad=True)
    block.conv(y)[0, 0].sum().backward()
    assert y.grad[0, 2].abs().sum() > 0 and y.grad[0, 5].abs().sum() == 0


def test_embedding_head_shape_and_gradient():
    head = EmbeddingHead(16, 8, 256)
    out = head(torch.randn(3, 6, 16))
    assert out.shape == (3, 256)
    _assert_every_parameter_learns(head, out)


# ----------------------------------------------------------------------------- whole network
def test_every_parameter_of_the_network_learns():
    torch.manual_seed(0)
    model = ProtoNet(TINY).train()
    out = model(*_inputs(batch=3))
    assert out.shape == (3, 256) and torch.isfinite(out).all()
    _assert_every_parameter_learns(model, out)


def test_use_spatial_false_never_reads_the_spatial_inputs():
    torch.manual_seed(0)
    model = ProtoNet(ProtoNetConfig.tiny(use_spatial=False))
    bands, gcc, tokens, domain, attribute = _inputs(batch=3)
    garbage = bands.clone()
    garbage[:, 2:] = float("nan")
    for mode in (model.train, model.eval):
        mode()
        clean = model(bands, gcc, tokens, domain, attribute)
        assert torch.isfinite(clean).all()
        torch.testing.assert_close(model(garbage, torch.full_like(gcc, float("nan")), tokens, domain, attribute),
                                   clean, rtol=0, atol=0)
        torch.testing.assert_close(model(garbage, None, tokens, domain, attribute), clean, rtol=0, atol=0)
    # the near/far channels are still read
    changed = bands.clone()
    changed[:, 1] += torch.randn_like(changed[:, 1]) * 10
    assert not torch.allclose(model(changed, gcc, tokens, domain, attribute), clean)


def test_use_spatial_true_reads_every_spatial_input():
    torch.manual_seed(0)
    model = ProtoNet(TINY).eval()
    bands, gcc, tokens, domain, attribute = _inputs(batch=2)
    clean = model(bands, gcc, tokens, domain, attribute)
    for channel in range(2, 7):
        changed = bands.clone()
        changed[:, channel] = torch.randn_like(changed[:, channel]) * 10
        assert not torch.allclose(model(changed, gcc, tokens, domain, attribute), clean), channel
    for cue in range(2):
        changed = gcc.clone()
        changed[..., cue] = torch.randn_like(changed[..., cue]) * 100
        assert not torch.allclose(model(bands, changed, tokens, domain, attribute), clean), cue
    with pytest.raises(ValueError, match="gcc"):
        model(bands, None, tokens, domain, attribute)


@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_real_features_of_two_clip_lengths_with_batch_one(seconds):
    """stereo_features + random-tiny BEATs tokens of one clip, eval mode: the layouts the system feeds."""
    from asdx.features.stereo import stereo_features

    rng = np.random.default_rng(0)
    near = rng.standard_normal(int(seconds * SR)).astype(np.float32) * 0.1
    wave = torch.from_numpy(np.stack([near, np.roll(near, 5) * 0.7])[None])  # far = delayed, quieter near
    feats = stereo_features(wave)
    torch.manual_seed(0)
    beats = BEATs(tiny_config()).eval()
    with torch.no_grad():
        extracted = beats.extract(wave[:, 0])
    assert extracted.bands == TINY.beats_bands and extracted.time_patches == _time_patches(seconds)
    model = ProtoNet(TINY).eval()
    with torch.no_grad():
        out = model(feats.bands, feats.gcc, extracted.tokens, torch.tensor([1]), torch.tensor([0]))
    assert feats.bands.shape == (1, 7, _frames(seconds), 128)
    assert out.shape == (1, 256) and torch.isfinite(out).all()


def test_rejects_malformed_inputs():
    model = ProtoNet(TINY).eval()
    bands, gcc, tokens, domain, attribute = _inputs(batch=2)
    with pytest.raises(ValueError, match="bands"):
        model(bands[:, :5], gcc, tokens, domain, attribute)
    with pytest.raises(ValueError, match="tokens"):
        model(bands, gcc, tokens[:, :-1], domain, attribute)
    with pytest.raises(ValueError, match="tokens"):
        model(bands, gcc, tokens[..., :8], domain, attribute)
    with pytest.raises(ValueError, match="attribute"):
        model(bands, gcc, tokens, domain, torch.tensor([0, TINY.n_attributes]))
    with pytest.raises(ValueError, match="domain"):
        model(bands, gcc, tokens, domain.int(), attribute)
