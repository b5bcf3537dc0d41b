"""P_proto: groups, prototypes and honest train scores, the loss families, SupCon, resume, the feature cache,
target oversampling, the use_spatial ablation, load_machine.

P_proto is § 2.2 of the report
"Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2".

Runs the tiny ProtoNet on the random-tiny BEATs and a small 1 s synthetic set: fan (visible attributes, groups
domain x spd, ArcFace + center loss) and bearingEmu (hidden attributes, domain-only groups, SupCon + domain CE).
16 source + 2 target train clips per machine: with target_share 0.2 an epoch draws 4 target clips.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asdx.data import Clip, generate, list_machines, machine_clips
from asdx.data.loader import ClipSet
from asdx.features import stereo_features
from asdx.systems.base import SystemContext
from asdx.models.heads import supervised_contrastive
from asdx.systems.proto import (MODEL_FILE, PROTOTYPES_FILE, RESUME_FILE, STEREO, Groups, ProtoConfig,
                                ProtoSystem, attribute_key, proto_min)
from asdx.scoring.prototypes import Prototypes

# lr far above the report's 1e-4 so that 3 epochs visibly move every trained parameter
# threshold_scores="loo": these tests are about the final network; the fold networks are tests/test_proto_threshold.py
FAST = dict(beats="random-tiny", size="tiny", epochs=3, batch_size=8, lr=1e-3, seed=0, device="cpu",
            threshold_scores="loo")


def context(cache: Path | None) -> SystemContext:
    return SystemContext(device=torch.device("cpu"), progress=False, cache_dir=cache)


def config(**changes) -> ProtoConfig:
    return ProtoConfig(**{**FAST, **changes})


def clipset(clips) -> ClipSet:
    return ClipSet.from_clips(list(clips), channels=2, seconds=1.0)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def record(index, domain="source", hidden=False, **attributes) -> Clip:
    return Clip(path=Path(f"/nowhere/m_{domain}_{index}.wav"), machine="m", dataset="dev", split="train",
                section="00", index=index, domain=domain, label="normal", attributes=MappingProxyType(attributes),
                hidden_attributes=hidden)


class Recording(ProtoSystem):
    """ProtoSystem that records, at the start of every epoch, the resume checkpoint on disk and the share of
    target clips in the epoch's batches."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.target_share_per_epoch: list[float] = []
        self.checkpoint_per_epoch: list[int | None] = []  # the epoch the resume file holds, None: no file

    def fit_machine(self, machine, train, folder):
        self._resume_path = Path(folder) / RESUME_FILE
        return super().fit_machine(machine, train, folder)

    def _epoch_batches(self, train, epoch):
        saved = torch.load(self._resume_path, weights_only=True) if self._resume_path.is_file() else None
        self.checkpoint_per_epoch.append(None if saved is None else saved["state"]["epoch"])
        batches = super()._epoch_batches(train, epoch)
        drawn = np.concatenate(batches)
        self.target_share_per_epoch.append(float(np.mean([train.clips[i].domain == "target" for i in drawn])))
        return batches


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("proto") / "data", machines="fan,bearingEmu", seconds=1.0, n_source=16,
                    n_target=2, n_test=4, seed=1, progress=False)
    machines = {m.name: m for m in list_machines(root)}
    return SimpleNamespace(root=root, machines=machines,
                           train={m: clipset(machine_clips(machines[m], "train")) for m in machines},
                           test={m: clipset(machine_clips(machines[m], "test")) for m in machines})


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    """fan and bearingEmu, 3 epochs each, one shared feature cache; the initial weights."""
    base = tmp_path_factory.mktemp("proto_fitted")
    out = {}
    for machine in ("fan", "bearingEmu"):
        system = Recording(config(), context(base / "cache"))
        train_scores = system.fit_machine(machine, data.train[machine], base / machine)
        test_scores = system.score_machine(data.test[machine])
        with torch.random.fork_rng(devices=[]):  # the initial weights, as _train makes them
            torch.manual_seed(system.config.seed)
            initial = system.new_model().state_dict()
        out[machine] = SimpleNamespace(system=system, folder=base / machine, train_scores=train_scores,
                                       test_scores=test_scores, initial=initial)
    return SimpleNamespace(cache=base / "cache", **out)


# ----------------------------------------------------------------------------- groups
def test_groups_split_on_speed_when_attributes_are_visible():
    clips = [record(0, spd="1000", **{"m-n": "W"}), record(1, spd="1200", **{"m-n": "X"}),
             record(2, spd="1000", **{"m-n": "X"}), record(0, "target", spd="1500", **{"m-n": "Y"}),
             record(1, "target", spd="1500", **{"m-n": "Y"})]
    assert attribute_key(clips) == "spd"  # preferred over the first key, m-n, which varies too
    groups = Groups.from_clips(clips)
    assert groups.visible and groups.key == "spd" and groups.values == ["1000", "1200", "1500"]
    assert groups.names == ["source|spd=1000", "source|spd=1200", "target|spd=1500"]
    # FiLM condition: (domain 0 source / 1 target, 1 + the value's position; 0 is kept for "unknown")
    assert groups.conditions == [(0, 1), (0, 2), (1, 3)]
    assert [groups.of(c) for c in clips] == [0, 1, 0, 2, 2]
    assert Groups.from_dict(groups.to_dict()) == groups
    # a value seen in both domains makes a group in each
    both = Groups.from_clips([*clips, record(2, "target", spd="1000", **{"m-n": "Y"})])
    assert both.names == ["source|spd=1000", "source|spd=1200", "target|spd=1000", "target|spd=1500"]
    assert both.conditions == [(0, 1), (0, 2), (1, 1), (1, 3)]


def test_the_attribute_is_decided_from_the_data():
    # no speed key: the first attribute (in file-name order) that takes two or more values
    clips = [record(0, pat="00", vel="2"), record(1, pat="01", vel="3"), record(0, "target", pat="02", vel="4")]
    assert attribute_key(clips) == "pat"
    # a speed key with one value does not count; "speed" is a speed key too
    assert attribute_key([record(0, spd="1", car="A"), record(1, "target", spd="1", car="B")]) == "car"
    assert attribute_key([record(0, car="A", speed="3"), record(1, "target", car="B", speed="4")]) == "speed"
    # nothing varies -> domain-only groups
    single = [record(0, spd="1"), record(1, "target", spd="1")]
    assert attribute_key(single) is None
    groups = Groups.from_clips(single)
    assert not groups.visible and groups.names == ["source", "target"] and groups.conditions == [(0, 0), (1, 0)]


def test_hidden_attributes_give_domain_only_groups(data):
    hidden = [record(0, hidden=True, vel="8"), record(1, hidden=True, vel="10"),
              record(0, "target", hidden=True, vel="13")]
    assert attribute_key(hidden) is None
    groups = Groups.from_clips(hidden)
    assert groups.names == ["source", "target"] and groups.conditions == [(0, 0), (1, 0)] and groups.values == []
    assert [groups.of(c) for c in hidden] == [0, 0, 1]
    # the synthetic machines: fan shows m-n and spd, bearingEmu writes noAttribute
    fan = Groups.from_clips(data.train["fan"].clips)
    assert fan.key == "spd" and fan.names[-1] == "target|spd=1500" and len(fan.names) == 3
    bearing = Groups.from_clips(data.train["bearingEmu"].clips)
    assert bearing.key is None and bearing.names == ["source", "target"]


# ----------------------------------------------------------------------------- SupCon
def supcon_by_loops(z: np.ndarray, labels: list[int], temperature: float) -> float:
    """Khosla et al. 2020, eq. 2 (L_out), written out: anchors without a positive are left out of the mean."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(z[i] @ z[a] / temperature) for a in range(len(z)) if a != i)
        losses.append(-sum(math.log(math.exp(z[i] @ z[p] / temperature) / denominator)
                           for p in positives) / len(positives))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supervised_contrastive_equals_a_direct_loop(temperature):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(7, 5))
    labels = [0, 1, 0, 2, 1, 0, 3]  # labels 2 and 3 have no positive: those anchors are left out
    got = supervised_contrastive(torch.from_numpy(z), torch.tensor(labels), temperature)
    assert float(got) == pytest.approx(supcon_by_loops(z, labels, temperature), rel=1e-9)
    # scale-invariant (the embeddings are normalised first)
    assert float(supervised_contrastive(torch.from_numpy(3 * z), torch.tensor(labels), temperature)) == \
        pytest.approx(float(got), rel=1e-9)
    # no anchor with a positive: 0, still differentiable
    x = torch.from_numpy(z).requires_grad_()
    none = supervised_contrastive(x, torch.arange(7), temperature)
    none.backward()
    assert float(none.detach()) == 0.0 and x.grad is not None


# ----------------------------------------------------------------------------- prototypes and honest train scores
def direct_per_group(system: ProtoSystem, clips: ClipSet, folder: Path) -> np.ndarray:
    """(N, G, D): every clip in one batch through model.net under each group's (domain, attribute) condition."""
    stores = system.feature_stores(clips, folder)
    [(indices, bands, gcc, tokens)] = list(system._inputs(*stores, [np.arange(len(clips))]))
    system.model.eval()
    out = []
    with torch.no_grad():
        for domain, attribute in system.groups.conditions:
            e = system.model.net(bands, gcc, tokens, torch.full((len(clips),), domain),
                                 torch.full((len(clips),), attribute))
            out.append(F.normalize(e, dim=1).double().numpy())
    return np.stack(out, axis=1)[np.argsort(indices)]


@pytest.mark.parametrize("machine", ["fan", "bearingEmu"])
def test_prototypes_are_group_means_and_train_scores_leave_the_clip_out(fitted, data, machine):
    fit = getattr(fitted, machine)
    system, train = fit.system, data.train[machine]
    per_group = direct_per_group(system, train, fit.folder)
    n, g_count, _ = per_group.shape
    own = np.array([system.groups.of(c) for c in train.clips])
    assert g_count == len(system.groups.names) == (3 if machine == "fan" else 2)
    assert np.bincount(own).min() >= 2
    np.testing.assert_allclose(system.embed_per_group(system.feature_stores(train, fit.folder), train), per_group,
                               rtol=1e-5, atol=1e-6)
    # prototype g = the mean of group g's clips, each embedded under group g's own condition
    for g in range(g_count):
        np.testing.assert_allclose(system.prototypes.means[g], per_group[own == g, g].mean(axis=0), rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_array_equal(system.prototypes.counts, np.bincount(own, minlength=g_count))
    # leave-one-out: the own group's mean without the clip, the other groups' full means
    expected = np.zeros((n, g_count))
    for i in range(n):
        for g in range(g_count):
            members = [j for j in range(n) if own[j] == g and j != i]
            expected[i, g] = np.linalg.norm(per_group[i, g] - per_group[members, g].mean(axis=0))
    scores = fit.train_scores
    assert list(scores.sub_scores) == ["nearest_group", *(f"distance[{name}]" for name in system.groups.names)]
    got = np.stack([scores.sub_scores[f"distance[{name}]"] for name in system.groups.names], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.scores, expected.min(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(scores.sub_scores["nearest_group"], expected.argmin(axis=1))
    # not the in-sample distances: a clip is closer to a mean it is part of
    in_sample = np.linalg.norm(per_group[np.arange(n), own] - system.prototypes.means[own], axis=1)
    assert np.all(got[np.arange(n), own] > in_sample)
    # test clips: the full means, min over groups
    test = fit.test_scores
    test_per_group = direct_per_group(system, data.test[machine], fit.folder)
    want = np.linalg.norm(test_per_group - system.prototypes.means[None], axis=2)
    np.testing.assert_allclose(test.scores, want.min(axis=1), rtol=1e-4, atol=1e-6)


def test_a_group_of_one_clip_has_no_own_prototype():
    rng = np.random.default_rng(0)
    per_group = rng.normal(size=(4, 2, 3))
    own = np.array([0, 0, 0, 1])  # group 1 has one clip
    prototypes = Prototypes.fit(["a", "b"], per_group[np.arange(4), own], own)
    distances = prototypes.distances(per_group, own)
    assert distances[3, 1] == np.inf
    assert distances[3, 0] == pytest.approx(np.linalg.norm(per_group[3, 0] - per_group[:3, 0].mean(axis=0)))
    assert distances[0, 0] == pytest.approx(np.linalg.norm(per_group[0, 0] - per_group[1:3, 0].mean(axis=0)))
    assert distances[0, 1] == pytest.approx(np.linalg.norm(per_group[0, 1] - per_group[3, 1]))
    scores = proto_min(prototypes, distances)
    assert np.all(np.isfinite(scores.scores)) and scores.sub_scores["nearest_group"][3] == 0
    assert scores.sub_scores["distance[b]"][3] == np.inf


# ----------------------------------------------------------------------------- loss families, epochs, checkpoints
def changed(before: torch.Tensor, after: torch.Tensor) -> float:
    return float((after - before).abs().max())


def test_visible_attributes_train_arcface_and_the_center_loss(fitted):
    fan = fitted.fan
    model = fan.system.model
    assert hasattr(model, "arcface") and hasattr(model, "center") and not hasattr(model, "domain_head")
    assert model.arcface.weight.shape[0] == model.center.centers.shape[0] == 3
    state = model.state_dict()
    # AdamW steps of lr 1e-3 moved them; weight decay alone (lr x 1e-2 x |w|) would move them < 1e-5
    assert changed(fan.initial["arcface.weight"], state["arcface.weight"]) > 1e-4
    assert changed(fan.initial["center.centers"], state["center.centers"]) > 1e-4
    # the mean ArcFace loss (s = 30) is far above a contrastive loss of 18 clips in batches of 8
    assert fan.system.history[0]["train_loss"] > 5


def test_hidden_attributes_train_a_domain_classifier(fitted):
    bearing = fitted.bearingEmu
    model = bearing.system.model
    assert hasattr(model, "domain_head") and not hasattr(model, "arcface") and not hasattr(model, "center")
    assert model.domain_head.out_features == 2
    assert changed(bearing.initial["domain_head.weight"], model.state_dict()["domain_head.weight"]) > 1e-4
    assert bearing.system.history[0]["train_loss"] < 5


@pytest.mark.parametrize("machine", ["fan", "bearingEmu"])
def test_every_epoch_writes_a_checkpoint_and_the_model_file_ends_the_training(fitted, machine):
    fit = getattr(fitted, machine)
    assert fit.system.epochs_run == 3 and [h["epoch"] for h in fit.system.history] == [1, 2, 3]
    assert fit.system.checkpoint_per_epoch == [None, 1, 2]  # each epoch starts from the last one's checkpoint
    assert (fit.folder / MODEL_FILE).is_file() and (fit.folder / PROTOTYPES_FILE).is_file()
    assert not (fit.folder / RESUME_FILE).exists()
    payload = torch.load(fit.folder / MODEL_FILE, weights_only=True)
    assert payload["groups"] == fit.system.groups.to_dict() and payload["history"] == fit.system.history
    assert same_state(payload["model"], fit.system.model.state_dict())
    initial_net = {k: v for k, v in fit.initial.items() if k.startswith("net.") and v.is_floating_point()}
    assert sum(changed(v, payload["model"][k]) > 1e-4 for k, v in initial_net.items()) > 0.9 * len(initial_net)


def test_an_interrupted_training_resumes_after_the_last_finished_epoch(fitted, data, tmp_path, monkeypatch):
    epoch_now = {"epoch": None}
    real_batches, real_step = ProtoSystem._epoch_batches, ProtoSystem._train_step

    def batches(self, train, epoch):
        epoch_now["epoch"] = epoch
        return real_batches(self, train, epoch)

    def step(self, *args, **kwargs):
        loss = real_step(self, *args, **kwargs)
        if epoch_now["epoch"] == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch, after one of its steps
        return loss

    monkeypatch.setattr(ProtoSystem, "_epoch_batches", batches)
    monkeypatch.setattr(ProtoSystem, "_train_step", step)
    with pytest.raises(KeyboardInterrupt):
        ProtoSystem(config(), context(fitted.cache)).fit_machine("fan", data.train["fan"], tmp_path)
    monkeypatch.setattr(ProtoSystem, "_train_step", real_step)
    assert (tmp_path / RESUME_FILE).is_file() and not (tmp_path / MODEL_FILE).exists()
    saved = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    assert saved["state"]["epoch"] == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / RESUME_FILE).write_bytes((tmp_path / RESUME_FILE).read_bytes())

    resumed = ProtoSystem(config(), context(fitted.cache))
    train_scores = resumed.fit_machine("fan", data.train["fan"], tmp_path)
    assert "proto: fan: resumed the training after epoch 1." in resumed.context.notes
    assert resumed.epochs_run == 2 and resumed.history == fitted.fan.system.history
    assert same_state(resumed.model.state_dict(), fitted.fan.system.model.state_dict())
    np.testing.assert_array_equal(train_scores.scores, fitted.fan.train_scores.scores)
    assert not (tmp_path / RESUME_FILE).exists()

    # the same checkpoint under other settings is not resumed: that training starts over
    other = ProtoSystem(config(epochs=2, seed=1), context(fitted.cache))
    other.fit_machine("fan", data.train["fan"], tmp_path / "other")
    assert not any("resumed" in n for n in other.context.notes) and other.epochs_run == 2


# ----------------------------------------------------------------------------- the feature cache
def test_a_second_fit_reads_every_feature_from_the_cache(fitted, data, tmp_path):
    assert fitted.fan.system.feature_batches > 0
    again = ProtoSystem(config(), context(fitted.cache))
    scores = again.fit_machine("fan", data.train["fan"], tmp_path)
    assert again.feature_batches == 0
    assert again.history == fitted.fan.system.history  # deterministic: same draws, same weights, same scores
    assert same_state(again.model.state_dict(), fitted.fan.system.model.state_dict())
    np.testing.assert_array_equal(scores.scores, fitted.fan.train_scores.scores)
    np.testing.assert_array_equal(again.score_machine(data.test["fan"]).scores, fitted.fan.test_scores.scores)
    assert again.feature_batches == 0
    # without a cache_dir the cache lives in the machine folder
    folder_cache = ProtoSystem(config(epochs=1), context(None))
    folder_cache.fit_machine("fan", data.train["fan"], tmp_path / "own")
    assert folder_cache.feature_batches > 0 and any((tmp_path / "own" / "feature_cache").rglob("*.npz"))


def test_cached_features_are_stereo_features_and_near_channel_beats_tokens(fitted, data):
    system, train = fitted.fan.system, data.train["fan"]
    before = system.feature_batches
    stores = system.feature_stores(train, fitted.fan.folder)
    assert system.feature_batches == before  # all cached
    indices = np.arange(6)
    [(got, bands, gcc, tokens)] = list(system._inputs(*stores, [indices]))
    [(loaded, audio)] = list(train.subset(indices).batches(2, 6))
    np.testing.assert_array_equal(got, indices)
    np.testing.assert_array_equal(loaded, np.arange(6))
    direct = stereo_features(audio, **STEREO)
    assert bands.shape == direct.bands.shape == (6, 7, 32, 128) and gcc.shape == direct.gcc.shape == (6, 32, 2)
    # packed as float16 and unpacked: float16 rounding only (dB values up to ~100 -> steps of 0.06)
    torch.testing.assert_close(bands, direct.bands, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gcc, direct.gcc, rtol=1e-3, atol=1e-3)
    # the BEATs tokens are the near channel's (channel 0), at the chosen layer
    with torch.no_grad():
        hidden = system.backbone.model.extract(audio[:, 0], layers=[system.layer]).hidden[system.layer]
    torch.testing.assert_close(tokens, hidden, rtol=1e-2, atol=1e-2)
    assert not torch.allclose(tokens, system.backbone.model.extract(audio[:, 1], layers=[system.layer]).hidden[system.layer],
                              rtol=1e-2, atol=1e-2)


# ----------------------------------------------------------------------------- target oversampling
def fake_train(n_source: int, n_target: int) -> SimpleNamespace:
    clips = [SimpleNamespace(domain="source")] * n_source + [SimpleNamespace(domain="target")] * n_target
    return SimpleNamespace(clips=clips, cropped_lengths=np.full(n_source + n_target, 16000))


@pytest.mark.parametrize("share, n_source, n_target, draws", [(0.2, 40, 4, 10), (0.2, 16, 2, 4), (0.5, 10, 3, 10),
                                                              (0.2, 8, 6, 6), (0.0, 10, 3, 3)])
def test_target_clips_are_drawn_up_to_the_target_share(share, n_source, n_target, draws):
    system = ProtoSystem(config(target_share=share, batch_size=4), context(None))
    train = fake_train(n_source, n_target)
    epochs = [np.concatenate(system._epoch_batches(train, epoch)) for epoch in range(3)]
    for drawn in epochs:
        assert len(drawn) == n_source + draws
        np.testing.assert_array_equal(np.sort(drawn[drawn < n_source]), np.arange(n_source))  # every source clip once
        assert np.all(drawn < n_source + n_target) and (drawn >= n_source).sum() == draws
    if draws == n_target:  # no oversampling needed (or target_share 0): every target clip exactly once
        assert all(sorted(d[d >= n_source]) == list(range(n_source, n_source + n_target)) for d in epochs)
    else:
        # with replacement, seeded per epoch: the same epoch draws the same clips, the next one others
        assert np.array_equal(epochs[0], np.concatenate(system._epoch_batches(train, 0)))
        assert not np.array_equal(np.sort(epochs[0]), np.sort(epochs[1])) or \
            not np.array_equal(np.sort(epochs[1]), np.sort(epochs[2]))


def test_training_sees_the_target_share_every_epoch(fitted):
    # 16 source + 2 target clips, target_share 0.2: 4 of the 20 clips of every epoch are target clips
    for machine in ("fan", "bearingEmu"):
        assert getattr(fitted, machine).system.target_share_per_epoch == [pytest.approx(0.2)] * 3


# ----------------------------------------------------------------------------- the ablation
def test_without_spatial_cues_the_network_reads_near_and_far_log_mel_only(fitted, data, tmp_path):
    system = ProtoSystem(config(epochs=1, use_spatial=False), context(fitted.cache))
    system.fit_machine("bearingEmu", data.train["bearingEmu"], tmp_path)
    assert system.feature_batches == 0  # the same cached features; the network ignores part of them
    net = system.model.net
    assert net.config.use_spatial is False and net.config.in_channels == 2
    assert any("spatial cues OFF" in n for n in system.context.notes)
    with_cues = fitted.bearingEmu.system
    assert with_cues.model.net.config.use_spatial is True
    stores = system.feature_stores(data.train["bearingEmu"], tmp_path)
    [(_, bands, gcc, tokens)] = list(system._inputs(*stores, [np.arange(8)]))
    changed_cues = bands.clone()
    changed_cues[:, 2:] = torch.randn_like(changed_cues[:, 2:]) * 10  # ILD, IPD, mid/side
    other_gcc = torch.randn_like(gcc) * 100
    zeros = torch.zeros(8, dtype=torch.long)
    for model, cues_matter in ((net, False), (with_cues.model.net, True)):
        model.eval()
        with torch.no_grad():
            plain = model(bands, gcc, tokens, zeros, zeros)
            other = model(changed_cues, other_gcc, tokens, zeros, zeros)
        assert torch.equal(plain, other) != cues_matter
    # the near/far log-mel still matter without the cues
    louder = bands.clone()
    louder[:, 1] += 6.0
    with torch.no_grad():
        assert not torch.allclose(net(bands, gcc, tokens, zeros, zeros), net(louder, gcc, tokens, zeros, zeros))


# ----------------------------------------------------------------------------- reload, checks
@pytest.mark.parametrize("machine", ["fan", "bearingEmu"])
def test_load_machine_restores_identical_test_scores(fitted, data, machine):
    fit = getattr(fitted, machine)
    loaded = ProtoSystem(config(), context(fitted.cache))
    prototypes = loaded.load_machine(fit.folder)
    assert loaded.groups == fit.system.groups and loaded.history == fit.system.history
    np.testing.assert_array_equal(prototypes.means, fit.system.prototypes.means)
    assert prototypes.names == fit.system.groups.names
    scores = loaded.score_machine(data.test[machine])
    assert loaded.feature_batches == 0  # the test features were cached when the fixture scored them
    np.testing.assert_array_equal(scores.scores, fit.test_scores.scores)
    for name, values in fit.test_scores.sub_scores.items():
        np.testing.assert_array_equal(scores.sub_scores[name], values)


def test_a_prototypes_file_without_its_format_tag_is_refused(fitted, tmp_path):
    """The prototypes file is checked like the model file: an untagged one (asdx before the tag) is not loaded."""
    folder = tmp_path / "fan"
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes((fitted.fan.folder / MODEL_FILE).read_bytes())
    with np.load(fitted.fan.folder / PROTOTYPES_FILE) as data:
        assert str(data["format"]) == "asdx.proto.prototypes/1"
        np.savez(folder / PROTOTYPES_FILE, **{k: data[k] for k in data.files if k != "format"})
    with pytest.raises(ValueError, match=f"{PROTOTYPES_FILE}: not a proto prototypes file"):
        ProtoSystem(config(), context(fitted.cache)).load_machine(folder)


def test_clear_errors(data, tmp_path):
    system = ProtoSystem(config(), context(None))
    with pytest.raises(RuntimeError, match="no prototypes yet"):
        system.score_machine(data.test["fan"])
    with pytest.raises(FileNotFoundError, match="no proto model"):
        system.load_machine(tmp_path)
    sources = [c for c in data.train["fan"].clips if c.domain == "source"]
    with pytest.raises(ValueError, match="needs train clips of both"):
        system.check_training_clips("fan", sources)
    with pytest.raises(ValueError, match="device"):
        ProtoConfig(device="tpu")
    with pytest.raises(ValueError, match="target_share"):
        ProtoConfig(target_share=1.0)
