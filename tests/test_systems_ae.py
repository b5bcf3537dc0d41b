"""The AE_baseline system: the official model, its MAHALA score, resume."""

import numpy as np
import pytest
import torch

from asdx.models import AENet
from asdx.systems.ae import AEConfig, AESystem, clip_vectors


def test_model_shapes_and_parameter_count():
    net = AENet()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 267_928
    assert net.cov_source.shape == net.cov_target.shape == (128, 128)
    assert not net.cov_source.requires_grad
    reconstruction, code = net(torch.randn(7, 640))
    assert reconstruction.shape == (7, 640) and code.shape == (7, 8)
    assert torch.all(code >= 0)  # the bottleneck goes through ReLU
    batchnorms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(batchnorms) == 9 and all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in batchnorms)
    assert isinstance(list(net.decoder)[-1], torch.nn.Linear)  # linear output


def small_training_set(seed=0, clips=16, samples=24000, n_target=6):
    rng = np.random.default_rng(seed)
    waveforms = (0.1 * rng.standard_normal((clips, 2, samples))).astype(np.float32)
    domains = np.array(["source"] * (clips - n_target) + ["target"] * n_target)
    return waveforms, domains


def official_covariances(system, state, flat, is_target, train_idx):
    """The official "epoch 101" covariances, quirks included, in NumPy from the trained model.

    Same batches (the permutation drawn from the recorded generator state); per batch and domain,
    the 128-dim per-frame errors are centred on that batch's own domain mean; the scatter sums over
    batches and is divided by the number of 640-dim VECTORS minus one (not frames); batches of one
    vector are skipped; a target domain with < 2 vectors reuses the source covariance.
    """
    generator = torch.Generator(device=system.generator.device)
    generator.set_state(state)
    order = train_idx[torch.randperm(len(train_idx), generator=generator)].numpy()
    size, n_mels = system.config.batch_size, system.config.n_mels
    with torch.no_grad():
        system.model.eval()
        errors = (flat - system.model(flat)[0]).double().numpy()
    target = is_target.numpy()
    scatter, vectors = np.zeros((2, n_mels, n_mels)), [0, 0]
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        if len(rows) <= 1:
            continue
        for domain in (0, 1):
            chosen = rows[target[rows] == bool(domain)]
            if len(chosen) == 0:
                continue
            frames = errors[chosen].reshape(-1, n_mels)
            scatter[domain] += np.cov(frames, rowvar=False, bias=True) * len(frames) if len(frames) > 1 else 0.0
            vectors[domain] += len(chosen)
    source = scatter[0] / (vectors[0] - 1)
    return [source, scatter[1] / (vectors[1] - 1) if vectors[1] >= 2 else source]


def test_mahala_equals_a_direct_numpy_computation():
    waveforms, domains = small_training_set()
    system = AESystem(AEConfig(epochs=2))
    seen = {}
    original = system._fit_covariances

    def spy(flat, is_target, train_idx):  # record the generator state the covariance pass starts from
        seen.update(state=system.generator.get_state(), flat=flat, is_target=is_target, train_idx=train_idx)
        original(flat, is_target, train_idx)

    system._fit_covariances = spy
    system.fit(waveforms, domains, progress=False)
    covariances = official_covariances(system, **seen)
    vectors = clip_vectors(waveforms[:3], system.config)
    with torch.no_grad():
        system.model.eval()
        errors = (system.model(vectors.reshape(-1, 640))[0].reshape(vectors.shape) - vectors).double().numpy()
    mean_error = errors.reshape(3, -1, 128).mean(axis=1)  # the clip-mean of the per-frame errors
    inverses = [np.linalg.inv(c) for c in covariances]
    np.testing.assert_allclose(system.model.cov_source.double().numpy(), covariances[0], rtol=1e-5,
                               atol=1e-7 * np.abs(covariances[0]).max())
    np.testing.assert_allclose(system.model.cov_target.double().numpy(), covariances[1], rtol=1e-5,
                               atol=1e-7 * np.abs(covariances[1]).max())
    np.testing.assert_allclose(system.precisions_, inverses, rtol=1e-3, atol=1e-6 * np.abs(inverses).max())
    expected = [min(d @ inverses[0] @ d, d @ inverses[1] @ d) for d in mean_error]
    np.testing.assert_allclose(system.score_vectors(vectors), expected, rtol=1e-4)


def test_mse_score_is_the_clip_mean_squared_error():
    waveforms, domains = small_training_set(1)
    system = AESystem(AEConfig(epochs=1, score="MSE")).fit(waveforms, domains, progress=False)
    vectors = clip_vectors(waveforms[:2], system.config)
    with torch.no_grad():
        system.model.eval()
        reconstruction = system.model(vectors.reshape(-1, 640))[0].reshape(vectors.shape)
    expected = ((reconstruction - vectors) ** 2).mean(dim=(1, 2)).double().numpy()
    np.testing.assert_allclose(system.score_vectors(vectors), expected, rtol=1e-6)


def test_resume_gives_the_same_scores_as_an_uninterrupted_run(tmp_path):
    waveforms, domains = small_training_set(2)
    uninterrupted = AESystem(AEConfig(epochs=4)).fit(waveforms, domains, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    AESystem(AEConfig(epochs=2)).fit(waveforms, domains, checkpoint=checkpoint, progress=False)  # "interrupted"
    resumed = AESystem(AEConfig(epochs=4)).fit(waveforms, domains, checkpoint=checkpoint, progress=False)
    assert resumed.history[:2] == uninterrupted.history[:2]
    np.testing.assert_array_equal(resumed.score(waveforms), uninterrupted.score(waveforms))
    np.testing.assert_array_equal(resumed.train_scores_, uninterrupted.train_scores_)


def test_config_validation():
    with pytest.raises(ValueError, match="score"):
        AEConfig(score="L1")
    with pytest.raises(ValueError, match="channel"):
        AEConfig(channel=2)
