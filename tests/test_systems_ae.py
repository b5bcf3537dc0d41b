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


def _randomised_batchnorms(net: AENet, seed: int = 0) -> AENet:
    """Running statistics and affine parameters far from their initial 0/1, so that a wrong fold shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.05)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return net.eval()


def test_folded_network_equals_the_eval_mode_forward():
    torch.manual_seed(0)
    net = _randomised_batchnorms(AENet())
    x = torch.randn(300, 640) * 10 - 20  # log-mel-like magnitudes
    folded = net.folded()
    assert len(folded) == 10
    weight_t, bias = folded[-1]
    with torch.no_grad():
        expected = net(x)[0]
        got = torch.addmm(bias, AENet.hidden_codes(x, folded), weight_t)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_clip_errors_equal_the_reconstruction_errors_for_clips_of_several_lengths():
    """clip_mean_errors skips the reconstructions (mean of the hidden rows through the output layer) and
    clip_mse fuses the error: both against the plain eval-mode forward, clip by clip, lengths mixed."""
    system = AESystem(AEConfig())
    _randomised_batchnorms(system.model, seed=1)
    rng = np.random.default_rng(3)
    clips = [torch.from_numpy((rng.standard_normal((n, 640)) * 8 - 30).astype(np.float32)) for n in (7, 40, 7, 13)]
    mse, mean_errors = system.clip_errors(clips)
    assert mse.dtype == mean_errors.dtype == np.float64 and mean_errors.shape == (4, 128)
    with torch.no_grad():
        for i, clip in enumerate(clips):
            errors = (system.model(clip)[0] - clip).double()
            np.testing.assert_allclose(mse[i], (errors**2).mean().item(), rtol=1e-5)
            expected = errors.reshape(-1, 128).mean(0).numpy()  # the mean over vectors and their 5 frames
            np.testing.assert_allclose(mean_errors[i], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    stacked = torch.stack([clips[0], clips[2]])  # a (clips, vectors, dim) tensor gives the same
    np.testing.assert_allclose(system.clip_mean_errors(stacked), mean_errors[[0, 2]], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(system.clip_mse(stacked), mse[[0, 2]], rtol=1e-6)


def test_scoring_a_loaded_model_makes_no_optimizer(tmp_path):
    """Scoring never trains: the optimizer (whose construction imports torch._dynamo) is made on first use,
    with the state the loaded model file holds."""
    waveforms, domains = small_training_set(4, clips=8)
    trained = AESystem(AEConfig(epochs=1, threshold_scores="in-sample")).fit(waveforms, domains, progress=False)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    loaded = AESystem(AEConfig(epochs=1, threshold_scores="in-sample"))
    loaded.load_machine(tmp_path)
    np.testing.assert_array_equal(loaded.score(waveforms), trained.score(waveforms))
    assert loaded._optimizer is None
    torch.testing.assert_close(loaded.state_dict()["optimizer"], trained.optimizer.state_dict())  # saved as loaded
    assert loaded._optimizer is None
    torch.testing.assert_close(loaded.optimizer.state_dict(), trained.optimizer.state_dict())  # made with it


def test_loading_and_scoring_import_neither_torch_dynamo_nor_scipy_signal(tmp_path):
    """`asdx score` starts in seconds: building an optimizer imports torch._dynamo (~1.2 s) and the synthetic
    set's sound models import scipy.signal (~1 s); neither is needed to load clips and score them."""
    import subprocess
    import sys

    import soundfile as sf

    path = tmp_path / "clip.wav"
    sf.write(str(path), (0.1 * np.random.default_rng(0).standard_normal((24000, 2))), 16000, subtype="PCM_16")
    code = ("import sys\n"
            "from asdx.data import load_clips\n"
            "from asdx.systems.ae import AEConfig, AESystem, clip_vectors\n"
            "import asdx.detector\n"
            f"vectors = clip_vectors(load_clips([{str(path)!r}], channels=1), AEConfig())\n"
            "system = AESystem(AEConfig())\n"
            "system.clip_errors(vectors)\n"
            "print(sorted(m for m in ('torch._dynamo', 'scipy.signal') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _per_weight_epoch(model, optimizer, generator, flat, train_idx, batch_size=256):
    """The training epoch as asdx ran it before the flat weights: a fused Adam over each weight, flat[rows]."""
    model.train()
    permuted = train_idx[torch.randperm(len(train_idx), generator=generator)]
    losses = []
    for start in range(0, len(permuted), batch_size):
        batch = flat[permuted[start : start + batch_size]]
        if batch.shape[0] <= 1:
            continue
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch)[0], batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_on_flat_weights_is_the_per_weight_adam_training():
    """Adam over one flat tensor of the weights is the per-weight Adam update (elementwise, no cross-weight
    term): same losses and weights epoch after epoch; and a per-weight optimizer state (an older checkpoint)
    continues the same training once loaded."""
    config = AEConfig(epochs=3)
    rng = np.random.default_rng(5)
    flat = torch.from_numpy((rng.standard_normal((1300, 640)) * 5 - 20).astype(np.float32))
    train_idx = torch.arange(1, 1300)  # 1299 rows: the last batch has 19
    system, reference = AESystem(config), AESystem(config)  # same seed: same initial weights
    optimizer = torch.optim.Adam(reference.model.parameters(), lr=config.lr, fused=True)
    for _ in range(2):
        system._train_epoch(flat, train_idx)
        expected = _per_weight_epoch(reference.model, optimizer, reference.generator, flat, train_idx)
        np.testing.assert_allclose(system.last_epoch_batch_losses_, expected, rtol=1e-6)
        for got, want in zip(system.model.state_dict().values(), reference.model.state_dict().values()):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    resumed = AESystem(config)
    resumed.load_state_dict({**system.state_dict(), "model": reference.model.state_dict(),
                             "optimizer": optimizer.state_dict()})
    resumed._train_epoch(flat, train_idx)
    _per_weight_epoch(reference.model, optimizer, reference.generator, flat, train_idx)
    for got, want in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_validation_loss_is_the_mean_squared_error_of_the_rows():
    system = AESystem(AEConfig())
    _randomised_batchnorms(system.model, seed=2)
    rng = np.random.default_rng(6)
    flat = torch.from_numpy((rng.standard_normal((5000, 640)) * 5 - 20).astype(np.float32))
    idx = torch.from_numpy(rng.permutation(5000)[:4500])  # two chunks of 4096 and 404 rows
    with torch.no_grad():
        expected = ((system.model(flat[idx])[0] - flat[idx]).double() ** 2).mean().item()
    assert system._mean_loss(flat, idx) == pytest.approx(expected, rel=1e-5)
    assert np.isnan(system._mean_loss(flat, idx[:0]))


def test_clip_errors_past_one_chunk_keep_the_clip_order():
    """Clips are scored 64 at a time: a set of 70 (a tensor, or a list of two lengths) keeps each clip's row."""
    system = AESystem(AEConfig())
    _randomised_batchnorms(system.model, seed=3)
    rng = np.random.default_rng(7)
    stacked = torch.from_numpy((rng.standard_normal((70, 6, 640)) * 8 - 30).astype(np.float32))
    clips = [clip if i % 3 else torch.cat([clip, clip[:2]]) for i, clip in enumerate(stacked)]  # lengths 8 and 6
    with torch.no_grad():
        expected = np.stack([(system.model(c)[0] - c).double().reshape(-1, 128).mean(0).numpy() for c in clips])
    scale = np.abs(expected).max()
    np.testing.assert_allclose(system.clip_mean_errors(clips), expected, rtol=1e-4, atol=1e-4 * scale)
    same_length = system.clip_mean_errors(stacked)
    np.testing.assert_allclose(same_length[1::3], expected[1::3], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(system.clip_mse(stacked)[66], system.clip_mse([stacked[66]])[0], rtol=1e-6)
