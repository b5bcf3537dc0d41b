"""T_fusion (system report §2.3): top-k fine-tuning, the trunk cache, per-machine scoring against NumPy/sklearn,
composite labels, early stopping on dev Ω, resume, SpecAugment / no cache, gradient accumulation.

Runs on the random-tiny BEATs (2 blocks, 64 dims) and a small 1 s synthetic set: fan and bearingEmu are
development machines (bearingEmu with hidden attributes), Sander an evaluation machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold, StratifiedKFold

from asdx.data import Clip, generate, list_machines, machine_clips
from asdx.data.loader import ClipSet
from asdx.metrics import machine_metrics, official_score
from asdx.models.heads import GeMPooling
from asdx.systems.base import SystemContext
from asdx.systems.fusion import (MACHINE_FILE, MODEL_FILE, RESUME_FILE, SUB_SCORES, FusionBanks, FusionConfig,
                                 FusionNet, FusionSystem, composite_classes, composite_label, dev_omega)

# Measured on this data (seed 1): dev Ω per epoch 0.534, 0.686, 0.564, 0.585 -> best epoch 2, stopped after 4
# (patience 2). The learning rates are far above the report's so that a few epochs visibly move the weights.
FAST = dict(beats="random-tiny", finetune_blocks=1, epochs=5, patience=2, lr=1e-2, backbone_lr=3e-2, batch_size=4,
            seed=0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def context(cache: Path | None, **kwargs) -> SystemContext:
    return SystemContext(device=torch.device("cpu"), progress=False, cache_dir=cache, **kwargs)


def clipset(clips) -> ClipSet:
    return ClipSet.from_clips(list(clips), channels=1, seconds=1.0)


def config(**changes) -> FusionConfig:
    return FusionConfig(**{**FAST, **changes})


class Recording(FusionSystem):
    """FusionSystem that snapshots the tuned weights and the trunk forward count around every training epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.snapshots: list[dict] = []
        self.trunk_per_epoch: list[int] = []

    def _epoch(self, *args, **kwargs):
        before = self.trunk_batches
        loss = super()._epoch(*args, **kwargs)
        self.trunk_per_epoch.append(self.trunk_batches - before)
        self.snapshots.append(self.net.tuned_state())
        return loss


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("fusion") / "data", machines="fan,bearingEmu,Sander", seconds=1.0,
                    n_source=8, n_target=2, n_test=2, seed=1, progress=False)
    machines = {m.name: m for m in list_machines(root)}
    dev = [machines["fan"], machines["bearingEmu"]]
    return SimpleNamespace(root=root, machines=machines,
                           train=clipset(c for m in dev for c in machine_clips(m, "train")),
                           validation=clipset(c for m in dev for c in machine_clips(m, "test")))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One global stage with early stopping on dev Ω, shared by the tests that only read it."""
    base = tmp_path_factory.mktemp("fusion_trained")
    system = Recording(config(), context(base / "cache"))
    system.fit_global(data.train, base / "global", data.validation)
    return SimpleNamespace(system=system, cache=base / "cache", folder=base / "global")


# ----------------------------------------------------------------------------- which parameters train
@pytest.mark.parametrize("k, trained_layers, bias_trains", [(0, [], False), (1, [1], False), (2, [0, 1], True),
                                                            (3, [0, 1], True)])
def test_finetune_blocks_unfreezes_only_the_top_blocks(k, trained_layers, bias_trains):
    system = FusionSystem(config(finetune_blocks=k), context(None))
    beats = system.load_backbone()
    assert beats.cfg.encoder_layers == 2 and system.start == 2 - len(trained_layers)
    params = dict(beats.named_parameters(remove_duplicate=False))  # the shared bias under every layer's name
    shared = [n for n in params if "relative_attention_bias" in n]
    assert len(shared) == 2  # one module, tied into both layers
    # the attention key bias stays frozen: softmax ignores it, its gradient is 0 (FusionSystem.load_backbone)
    expected = {n for n in params if any(n.startswith(f"encoder.layers.{i}.") for i in trained_layers)
                and (bias_trains or "relative_attention_bias" not in n) and not n.endswith("k_proj.bias")}
    assert {n for n, p in params.items() if p.requires_grad} == expected
    assert all(params[n].requires_grad == bias_trains for n in shared)
    assert (k > 2) == any("finetune_blocks=3, but this BEATs has 2 blocks" in n for n in system.context.notes)


def test_only_the_top_block_and_arcface_get_gradients(data):
    system = FusionSystem(config(finetune_blocks=1), context(None))
    beats = system.load_backbone()
    _, audio = next(data.train.batches(1, 6))
    with torch.no_grad():
        trunk = beats.extract(audio[:, 0], layers=[1]).hidden[1]
    net = FusionNet(beats, 1, n_classes=3, gem_p=3.0, s=64.0, m=0.2)
    net(trunk, torch.tensor([0, 1, 2, 0, 1, 2])).sum().backward()
    top = [n for n, _ in net.named_parameters(remove_duplicate=False)
           if n.startswith("beats.encoder.layers.1.") and "relative_attention_bias" not in n
           and not n.endswith("k_proj.bias")]  # frozen: softmax ignores a key bias, its gradient is 0
    assert len(top) == 18  # attention (q, k weight, v, out, gate), two LayerNorms, fc1, fc2
    for name, p in net.named_parameters(remove_duplicate=False):
        if name in top or name.startswith("arcface."):
            assert p.grad is not None, name
            assert p.grad.abs().max() > 1e-4, name
        else:
            assert p.grad is None, name  # frozen lower block, patch embedding, shared relative position bias
    assert set(net.tuned_state()) == {*top, "arcface.weight"}


# ----------------------------------------------------------------------------- the trunk cache
def test_the_cached_float16_trunk_gives_the_full_forward_loss(data, tmp_path):
    system = FusionSystem(config(), context(tmp_path / "cache"))
    system.load_backbone()
    system._cache_root = system._cache_root_for(tmp_path)
    store = system.trunk_store(data.train)
    assert system.trunk_batches == 2  # 20 clips in batches of 16
    system._build(n_classes=3)
    indices = np.arange(6)
    _, cached = store[indices]
    assert cached.dtype == torch.float16
    _, audio = next(data.train.subset(indices).batches(1, 6))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        full = system.beats.extract(audio[:, 0], layers=[system.start])
        states = full.hidden[system.start]
        torch.testing.assert_close(cached.float(), states, rtol=2e-3, atol=2e-3)  # float16 rounding only
        # the top block + GeM on the states after block 1 is the rest of the full forward
        torch.testing.assert_close(system.net.embed(states), GeMPooling(3.0)(full.tokens), rtol=1e-5, atol=1e-6)
        from_cache, from_audio = system.net(cached.float(), labels), system.net(states, labels)
    np.testing.assert_allclose(from_cache.numpy(), from_audio.numpy(), rtol=1e-2, atol=1e-3)
    assert float(from_cache.mean()) == pytest.approx(float(from_audio.mean()), rel=1e-3)
    assert system.trunk_batches == 2  # reading the store forwards nothing


def test_training_from_the_cache_matches_recomputing_the_trunk_every_epoch(data, tmp_path):
    """validation=None: early stopping on the validation loss (noted); cache_trunk=False recomputes the trunk."""
    settings = dict(epochs=2, patience=5, backbone_lr=1e-3)
    cached = Recording(config(**settings), context(tmp_path / "cache"))
    cached.fit_global(data.train, tmp_path / "cached")
    assert cached.monitor == "validation-loss" and all("validation_loss" in h for h in cached.history)
    assert any("no development ground truth" in n for n in cached.context.notes)
    assert cached.trunk_batches > 0 and cached.trunk_per_epoch == [0, 0]  # epochs read the cache only
    assert not any("recomputed from audio" in n for n in cached.context.notes)

    recomputed = Recording(config(**settings, cache_trunk=False), context(tmp_path / "cache"))
    recomputed.fit_global(data.train, tmp_path / "recomputed")
    assert any("cache_trunk=false; the frozen trunk is recomputed from audio every epoch" in n
               for n in recomputed.context.notes)
    assert all(n > 0 for n in recomputed.trunk_per_epoch) and len(recomputed.trunk_per_epoch) == 2
    for a, b in zip(cached.history, recomputed.history):  # float16 storage vs float32 states: measured 5e-5
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=5e-4)
        assert a["validation_loss"] == pytest.approx(b["validation_loss"], rel=5e-4)
    tuned, again = cached.net.tuned_state(), recomputed.net.tuned_state()
    assert tuned.keys() == again.keys()
    for name in tuned:
        torch.testing.assert_close(tuned[name], again[name], rtol=1e-2, atol=2e-3)

    # a second training over the same cache: no trunk forward at all, bit-identical result
    second = FusionSystem(config(**settings), context(tmp_path / "cache"))
    second.fit_global(data.train, tmp_path / "second")
    assert second.trunk_batches == 0 and second.history == cached.history
    assert same_state(second.net.tuned_state(), tuned)


def test_spec_augment_recomputes_the_trunk_every_epoch(data, tmp_path):
    plain = FusionSystem(config(epochs=1, cache_trunk=False), context(tmp_path / "cache"))
    plain.fit_global(data.train, tmp_path / "plain")
    augmented = Recording(config(epochs=2, patience=5, spec_augment=True), context(tmp_path / "cache"))
    augmented.fit_global(data.train, tmp_path / "augmented")
    assert any("spec_augment changes the trunk input every epoch; the frozen trunk is recomputed from audio" in n
               for n in augmented.context.notes)
    assert len(augmented.trunk_per_epoch) == 2 and all(n > 0 for n in augmented.trunk_per_epoch)
    # the masks change what the top block sees: another first-epoch loss than the same run unmasked
    # (measured 27.4 vs 25.2; without the masks the two are equal)
    assert augmented.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"], rel=1e-2)


# ----------------------------------------------------------------------------- per-machine scoring against NumPy
def rank(scores, reference):
    """(count(ref < s) + 0.5 count(ref == s)) / n, element by element."""
    reference = np.asarray(reference)
    return np.array([((reference < s).sum() + 0.5 * (reference == s).sum()) / reference.size for s in scores])


def reference_scoring(bank, domains, queries, k, components, folds, max_components, seed, transductive):
    """Report §2.3 per-machine scoring, written out: brute-force cosine kNN, sklearn GMMs, ranks, min, -log."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    a, b = unit(bank), unit(queries)
    pair = 1.0 - a @ a.T
    np.fill_diagonal(pair, np.inf)  # leave-one-out: a clip is never its own neighbour
    knn_train = np.sort(pair, axis=1)[:, :k].mean(1)
    knn_test = np.sort(1.0 - b @ a.T, axis=1)[:, :k].mean(1)

    def mixture(x, n):
        return GaussianMixture(n, covariance_type="diag", reg_covar=1e-6, max_iter=100, random_state=seed).fit(x)

    if components is None:  # BIC over K = 1..max_components on the whole bank, the smallest K on a tie
        bic = {n: mixture(a, n).bic(a) for n in range(1, max_components + 1)}
        components = min(bic, key=lambda n: (bic[n], n))
    gmm_test = -mixture(a, components).score_samples(b)
    domains = np.asarray(domains)
    smallest = np.unique(domains, return_counts=True)[1].min()
    splitter = StratifiedKFold(min(folds, smallest), shuffle=True, random_state=seed) if smallest >= 2 \
        else KFold(folds, shuffle=True, random_state=seed)
    gmm_train = np.zeros(len(a))
    for kept, held in splitter.split(a, domains):
        gmm_train[held] = -mixture(a[kept], components).score_samples(a[held])

    def fuse(knn, gmm, references):
        knn_rank, gmm_rank = rank(knn, references[0]), rank(gmm, references[1])
        fused = np.minimum(knn_rank, gmm_rank)
        n = len(references[0])
        return -np.log(1.0 - np.minimum(fused, 1.0 - 0.5 / n)), (knn, gmm, knn_rank, gmm_rank, fused)

    train = fuse(knn_train, gmm_train, (knn_train, gmm_train))
    test = fuse(knn_test, gmm_test, (knn_test, gmm_test) if transductive else (knn_train, gmm_train))
    return train, test, components


@pytest.mark.parametrize("k, components, rank_norm", [(1, 2, "inductive"), (2, None, "inductive"),
                                                      (1, 2, "transductive")])
def test_machine_scoring_equals_a_direct_numpy_sklearn_computation(k, components, rank_norm, tmp_path):
    rng = np.random.default_rng(4)
    bank = rng.normal(size=(36, 6)) * rng.uniform(0.5, 2.0, size=6) + 3.0
    bank[30:] += rng.normal(size=6)  # the target clips sit elsewhere
    domains = ["source"] * 30 + ["target"] * 6
    queries = np.concatenate([rng.normal(size=(12, 6)) * 2.0 + 3.0, bank[[3, 31]] + 1e-3])
    cfg = FusionConfig(beats="random-tiny", knn_k=k, gmm_components=components, gmm_max_components=3, gmm_folds=4,
                       rank_norm=rank_norm)
    banks, train_scores, info = FusionBanks.fit("fan", bank, domains, cfg, seed=7)
    test_scores = banks.score(queries)
    expected_train, expected_test, expected_k = reference_scoring(bank, domains, queries, k, components, 4, 3, 7,
                                                                  rank_norm == "transductive")
    assert info["gmm_components"] == expected_k
    for got, (score, parts) in ((train_scores, expected_train), (test_scores, expected_test)):
        assert list(got.sub_scores) == list(SUB_SCORES)
        np.testing.assert_allclose(got.sub_scores["knn_distance"], parts[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.sub_scores["gmm_nll"], parts[1], rtol=1e-8, atol=1e-8)
        for name, want in zip(SUB_SCORES[2:], parts[2:]):  # no near ties in this data: ranks agree exactly
            np.testing.assert_array_equal(got.sub_scores[name], want, err_msg=name)
        np.testing.assert_allclose(got.scores, score, rtol=1e-12)
    assert np.all(train_scores.sub_scores["knn_distance"] > 1e-4)  # leave-one-out: no clip is its own neighbour
    loaded = FusionBanks.load(banks.save(tmp_path / MACHINE_FILE))
    assert (loaded.machine, loaded.knn_k, loaded.knn_metric, loaded.rank_norm) == ("fan", k, "cosine", rank_norm)
    again = loaded.score(queries)
    np.testing.assert_array_equal(again.scores, test_scores.scores)
    for name in SUB_SCORES:
        np.testing.assert_array_equal(again.sub_scores[name], test_scores.sub_scores[name])


def test_ranks_count_ties_half_and_the_score_caps_the_top_rank(tmp_path):
    """One-hot embeddings make the cosine distances exactly 0 or 1: ties with the leave-one-out references."""
    eye = np.eye(8)
    bank = eye[[0, 0, 1, 1, 2, 3, 4, 5]]  # leave-one-out distances: 0, 0, 0, 0, 1, 1, 1, 1
    cfg = FusionConfig(beats="random-tiny", gmm_components=1, gmm_folds=4)
    banks, train_scores, _ = FusionBanks.fit("fan", bank, ["source"] * 8, cfg)
    np.testing.assert_array_equal(banks.knn_train, [0, 0, 0, 0, 1, 1, 1, 1])
    # the train clips rank among themselves: 4 ties at 0 -> 0.25, 4 ties at 1 -> 0.75
    np.testing.assert_array_equal(train_scores.sub_scores["knn_rank"], [0.25] * 4 + [0.75] * 4)
    below_all = -np.ones((1, 8))  # negative cosine to every bank member: farther than every train clip
    scores = banks.score(np.concatenate([eye[[0, 6]], below_all]))
    knn = scores.sub_scores
    np.testing.assert_array_equal(knn["knn_distance"][:2], [0.0, 1.0])
    np.testing.assert_array_equal(knn["knn_rank"], [0.25, 0.75, 1.0])
    np.testing.assert_array_equal(knn["fused_rank"], np.minimum(knn["knn_rank"], knn["gmm_rank"]))
    np.testing.assert_allclose(scores.scores, -np.log1p(-np.minimum(knn["fused_rank"], 1 - 0.5 / 8)), rtol=1e-12)
    # above every honest train score of both scorers: fused rank 1, capped at 1 - 0.5 / 8 -> log(2 n)
    top = banks._fuse(np.array([2.0, 0.0]), np.array([banks.gmm_train.max() + 1.0, banks.gmm_train.max()]))
    np.testing.assert_array_equal(top.sub_scores["fused_rank"], [1.0, 0.25])
    np.testing.assert_allclose(top.scores, [np.log(16.0), -np.log(0.75)], rtol=1e-12)
    # transductive: ranks within the scored set itself
    transductive = dataclasses.replace(banks, rank_norm="transductive")
    np.testing.assert_array_equal(transductive.score(eye[[0, 0, 6]]).sub_scores["knn_rank"], [1 / 3, 1 / 3, 5 / 6])
    # ten queries farther and farther from e0: ranks (i + 0.5) / 10 in both scorers, the top one capped at
    # 1 - 0.5 / 10 (the scored set's size, not the bank's 8)
    spread = transductive.score(eye[[0] * 10] + np.linspace(0.1, 1.0, 10)[:, None] * eye[6])
    np.testing.assert_array_equal(spread.sub_scores["fused_rank"], (np.arange(10) + 0.5) / 10)
    np.testing.assert_allclose(spread.scores, -np.log1p(-(np.arange(10) + 0.5) / 10), rtol=1e-12)


# ----------------------------------------------------------------------------- composite labels
def record(machine, index, domain="source", hidden=False, section="00", **attributes) -> Clip:
    return Clip(path=Path(f"/nowhere/{machine}_{index}.wav"), machine=machine, dataset="dev", split="train",
                section=section, index=index, domain=domain, label="normal",
                attributes=MappingProxyType(attributes), hidden_attributes=hidden)


def test_composite_labels_add_visible_attributes_only():
    clips = [record("fan", 0, spd="1000", **{"m-n": "W"}), record("fan", 1, "target", spd="1500", **{"m-n": "Y"}),
             record("fan", 2, spd="1000", **{"m-n": "W"}), record("ToyCar", 0, section="01", car="A1", mic="1"),
             record("bearingEmu", 0, hidden=True, vel="8"), record("bearingEmu", 1, "target", hidden=True)]
    assert [composite_label(c) for c in clips] == [
        "fan|section_00|source|m-n=W|spd=1000", "fan|section_00|target|m-n=Y|spd=1500",
        "fan|section_00|source|m-n=W|spd=1000", "ToyCar|section_01|source|car=A1|mic=1",
        "bearingEmu|section_00|source", "bearingEmu|section_00|target"]
    assert composite_classes(clips) == sorted({composite_label(c) for c in clips})
    assert len(composite_classes(clips)) == 5


def test_the_global_model_trains_on_composite_classes(trained, data):
    classes = trained.system.classes
    assert classes == composite_classes(data.train.clips)
    assert {c for c in classes if c.startswith("bearingEmu")} == {"bearingEmu|section_00|source",
                                                                  "bearingEmu|section_00|target"}
    fan = [c for c in classes if c.startswith("fan|")]
    assert len(fan) >= 3 and all("m-n=" in c and "spd=" in c for c in fan)
    assert trained.system.net.arcface.weight.shape == (len(classes), 64)


# ----------------------------------------------------------------------------- early stopping on dev Ω
def knn_omega(train_embeddings, test_embeddings, test_clips):
    """Ω of 1-NN cosine distances, brute force, through asdx.metrics."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    per_machine = {}
    for machine, test in test_embeddings.items():
        scores = (1.0 - unit(test) @ unit(train_embeddings[machine]).T).min(1)
        clips = test_clips[machine]
        labels = np.array([c.label == "anomaly" for c in clips], dtype=np.int8)
        domains = np.array([c.domain == "target" for c in clips], dtype=np.int8)
        per_machine[machine] = machine_metrics(labels, scores, domains, np.zeros(len(clips)))
    return official_score(per_machine.values()), {m: official_score([v]) for m, v in per_machine.items()}


def test_early_stopping_on_dev_omega_keeps_the_best_epochs_weights(trained, data):
    system = trained.system
    assert system.monitor == "dev-omega"
    omegas = [h["dev_omega"] for h in system.history]
    assert all(set(h["dev_omega_per_machine"]) == {"fan", "bearingEmu"} for h in system.history)
    assert system.best_epoch == int(np.argmax(omegas)) + 1  # measured: 0.534, 0.686, 0.564, 0.585 -> 2
    assert system.best_epoch < len(omegas) == system.best_epoch + FAST["patience"] < FAST["epochs"]  # patience
    assert len(system.snapshots) == len(omegas)
    assert same_state(system.net.tuned_state(), system.snapshots[system.best_epoch - 1])
    assert not same_state(system.net.tuned_state(), system.snapshots[-1])
    assert (trained.folder / MODEL_FILE).is_file() and not (trained.folder / RESUME_FILE).exists()

    # the model on disk re-evaluates to the best epoch's Ω, and dev_omega() is the official score of 1-NN distances
    loaded = FusionSystem(config(), context(trained.cache))
    loaded.load_global(trained.folder)
    assert loaded.best_epoch == system.best_epoch and loaded.monitor == "dev-omega"
    assert loaded.history == system.history
    assert loaded.trunk_batches == 0
    machines = ["fan", "bearingEmu"]
    train = {m: loaded.embed(data.train.subset([i for i, c in enumerate(data.train.clips) if c.machine == m]))
             for m in machines}
    rows = {m: [i for i, c in enumerate(data.validation.clips) if c.machine == m] for m in machines}
    test = {m: loaded.embed(data.validation.subset(rows[m])) for m in machines}
    test_clips = {m: [data.validation.clips[i] for i in rows[m]] for m in machines}
    np.testing.assert_array_equal(test["fan"], system.embed(data.validation.subset(rows["fan"])))
    omega, per_machine = dev_omega(train, test, test_clips, k=1, metric="cosine")
    want, want_per_machine = knn_omega(train, test, test_clips)
    assert omega == pytest.approx(want, abs=1e-12)
    assert per_machine == pytest.approx(want_per_machine, abs=1e-12)
    assert omega == pytest.approx(omegas[system.best_epoch - 1], abs=1e-12)
    assert per_machine == pytest.approx(system.history[system.best_epoch - 1]["dev_omega_per_machine"], abs=1e-12)


def test_dev_omega_without_ground_truth_is_a_clear_error(data, trained, tmp_path):
    system = FusionSystem(config(early_stopping="dev-omega"), context(trained.cache))
    with pytest.raises(ValueError, match="early_stopping=dev-omega: no development machine has labelled test clips"):
        system.fit_global(data.train, tmp_path / "none", None)
    normals = data.validation.subset([i for i, c in enumerate(data.validation.clips) if c.label == "normal"])
    with pytest.raises(ValueError, match="early_stopping=dev-omega"):
        system.fit_global(data.train, tmp_path / "normals", normals)
    assert not (tmp_path / "none" / MODEL_FILE).exists()
    # auto with unusable validation clips falls back to the validation loss, and says so
    fallback = FusionSystem(config(epochs=1), context(trained.cache))
    fallback.fit_global(data.train, tmp_path / "fallback", normals)
    assert fallback.monitor == "validation-loss" and "validation_loss" in fallback.history[0]
    assert any("early stopping watches the ArcFace loss of a validation split" in n for n in fallback.context.notes)


# ----------------------------------------------------------------------------- resume
def test_an_interrupted_training_resumes_after_the_last_finished_epoch(trained, data, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_epoch = FusionSystem._epoch

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return real_epoch(self, *args, **kwargs)

    monkeypatch.setattr(FusionSystem, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        FusionSystem(config(), context(trained.cache)).fit_global(data.train, tmp_path, data.validation)
    monkeypatch.setattr(FusionSystem, "_epoch", real_epoch)
    assert (tmp_path / RESUME_FILE).is_file() and not (tmp_path / MODEL_FILE).exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / RESUME_FILE).write_bytes((tmp_path / RESUME_FILE).read_bytes())

    resumed = FusionSystem(config(), context(trained.cache))
    resumed.fit_global(data.train, tmp_path, data.validation)
    assert "fusion: resumed the training after epoch 1." in resumed.context.notes
    assert resumed.epochs_run == len(trained.system.history) - 1  # epoch 1 came from the checkpoint
    assert resumed.history == trained.system.history and resumed.best_epoch == trained.system.best_epoch
    assert same_state(resumed.net.tuned_state(), trained.system.net.tuned_state())
    assert not (tmp_path / RESUME_FILE).exists()

    # the same checkpoint under a run of other settings is not resumed: that training starts over
    other = FusionSystem(config(epochs=1, seed=1), context(trained.cache))
    other.fit_global(data.train, tmp_path / "other", data.validation)
    assert not any("resumed" in n for n in other.context.notes) and other.epochs_run == 1


# ----------------------------------------------------------------------------- gradient accumulation
def test_accumulated_micro_batches_make_one_step_over_their_clips(data, trained):
    """A step = accumulation_steps micro-batches; the summed loss is divided by the step's clip count."""
    system = FusionSystem(config(batch_size=3, accumulation_steps=2), context(trained.cache))
    system.load_backbone()
    system._cache_root = trained.cache
    store = system.trunk_store(data.train)
    targets = np.arange(len(data.train)) % 3
    batches = system._micro_batches(data.train, np.arange(len(data.train)), 0)
    assert [len(b) for b in batches].count(2) == 1 and len(batches) == 7  # 20 clips: six of 3, one of 2

    def optimiser(net):
        beats = [p for p in net.beats.parameters() if p.requires_grad]
        arcface = list(net.arcface.parameters())
        return torch.optim.AdamW([{"params": beats, "lr": 1e-2}, {"params": arcface, "lr": 1e-2}], weight_decay=1e-2)

    system._build(3)
    start = system.net.tuned_state()  # the top block is trained in place: every run starts from here

    def fresh():
        system._build(3)
        system.net.load_tuned_state(start)
        return system.net

    def through_epoch(accumulation):
        system.config = dataclasses.replace(system.config, accumulation_steps=accumulation)
        net = fresh()
        system._epoch(net, optimiser(net), data.train, store, batches, targets, 0)
        return net.tuned_state()

    accumulated = through_epoch(2)
    assert same_state(through_epoch(2), accumulated)  # deterministic
    single = through_epoch(1)
    assert not all(torch.allclose(single[k], accumulated[k], atol=1e-6) for k in single)

    # by hand: steps over micro-batches (0, 1), (2, 3), (4, 5), (6,), each the mean loss over the step's clips
    optimizer = optimiser(fresh())
    for first in range(0, len(batches), 2):
        step = batches[first : first + 2]
        clips = sum(len(b) for b in step)
        optimizer.zero_grad()
        for batch in step:
            _, tokens = store[batch]
            (system.net(tokens.float(), torch.from_numpy(targets[batch])).sum() / clips).backward()
        optimizer.step()
    by_hand = system.net.tuned_state()
    for name in accumulated:
        torch.testing.assert_close(accumulated[name], by_hand[name], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- per-machine stage
def test_fit_machine_score_machine_and_reload(trained, data, tmp_path):
    sander = data.machines["Sander"]
    train, test = clipset(machine_clips(sander, "train")), clipset(machine_clips(sander, "test"))
    first = trained.system.fit_machine("Sander", train, tmp_path / "Sander")
    scores = trained.system.score_machine(test)
    assert (tmp_path / "Sander" / MACHINE_FILE).is_file()
    assert len(first.scores) == len(train) and len(scores.scores) == len(test)
    assert np.all(first.sub_scores["knn_distance"] > 0)  # leave-one-out
    np.testing.assert_array_equal(scores.sub_scores["fused_rank"],
                                  np.minimum(scores.sub_scores["knn_rank"], scores.sub_scores["gmm_rank"]))
    reloaded = FusionSystem(config(), context(trained.cache))
    reloaded.load_global(trained.folder)
    reloaded.load_machine(tmp_path / "Sander")
    np.testing.assert_array_equal(reloaded.score_machine(test).scores, scores.scores)
    assert reloaded.trunk_batches == 0  # Sander's trunk states are cached too
    with pytest.raises(ValueError, match="fine-tuned from BEATs random-tiny above block 1"):
        FusionSystem(config(finetune_blocks=2), context(trained.cache)).load_global(trained.folder)
    with pytest.raises(ValueError, match="arcface_m"):
        FusionSystem(config(arcface_m=0.3), context(trained.cache)).load_global(trained.folder)
