"""P_proto's threshold scores (ProtoConfig.threshold_scores): the kfold fold networks never train on the clips
they score, score them against the prototypes of their own training clips, are put on the final network's
scale and balanced by domain; the final network is the same as with loo; finished folds are not retrained.

fan (visible attributes: groups domain x spd), 1 s clips, 10 source + 3 target train clips, the tiny network
on the random-tiny BEATs, 1 epoch.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asdx.data import generate, list_machines, machine_clips
from asdx.data.loader import ClipSet
from asdx.splits import stratified_folds
from asdx.systems._threshold_scores import align_scores, balance_domains
from asdx.systems.base import SystemContext
from asdx.scoring.prototypes import Prototypes
from asdx.systems.proto import FOLD_FILE, MODEL_FILE, ProtoConfig, ProtoSystem, proto_min

FAST = dict(beats="random-tiny", size="tiny", epochs=1, batch_size=8, lr=1e-3, seed=0, device="cpu", folds=3)


class Spy(ProtoSystem):
    """Records the clips each network trained on, and each fold network's embeddings of its clips."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trained_on: list[list[str]] = []
        self.fold_embeddings: list[tuple[np.ndarray, np.ndarray]] = []

    def _train(self, machine, train, stores, folder, what=""):
        self.trained_on.append([c.path.name for c in train.clips])
        super()._train(machine, train, stores, folder, what)

    def _score_fold(self, train, stores, held, kept):
        self.fold_embeddings.append(tuple(self.embed_per_group(tuple(_subsets(stores, idx)), train.subset(idx))
                                          for idx in (held, kept)))
        return super()._score_fold(train, stores, held, kept)


def _subsets(stores, indices):
    return [s.subset(indices) for s in stores]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("proto_threshold") / "data", machines="fan", seconds=1.0, n_source=10,
                    n_target=3, n_test=2, seed=2, progress=False)
    machine = list_machines(root)[0]
    return ClipSet.from_clips(machine_clips(machine, "train"), channels=2, seconds=1.0)


def fit(train, folder: Path, cache: Path, system_class=Spy, **changes):
    system = system_class(ProtoConfig(**{**FAST, **changes}),
                          SystemContext(device=torch.device("cpu"), progress=False, cache_dir=cache))
    scores = system.fit_machine("fan", train, folder)
    return SimpleNamespace(system=system, scores=scores, folder=folder)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("proto_threshold_runs")
    return SimpleNamespace(kfold=fit(data, base / "kfold", base / "cache"),
                           loo=fit(data, base / "loo", base / "cache", threshold_scores="loo"), base=base)


def test_fold_networks_never_train_on_the_clips_they_score(runs, data):
    names = [c.path.name for c in data.clips]
    fold = stratified_folds(np.array([c.domain for c in data.clips]), 3, 0)
    trained = runs.kfold.system.trained_on
    assert len(trained) == 4  # the fold networks first, then the final network on every clip
    for k in range(3):
        assert sorted(trained[k]) == sorted(n for n, f in zip(names, fold) if f != k)
    assert trained[3] == names
    for k in range(3):  # what they left behind: their scores, not their (large) model files
        assert (runs.kfold.folder / f"fold{k}" / FOLD_FILE).is_file()
        assert not (runs.kfold.folder / f"fold{k}" / MODEL_FILE).exists()


def test_held_out_scores_are_distances_to_the_fold_networks_own_prototypes(runs, data):
    """Direct NumPy: a held-out clip's raw score is its minimum distance to the group means of the fold
    network's kept clips (each embedded under its own group's condition); the reference is their
    leave-one-out scores."""
    system = runs.kfold.system
    own = np.array([system.groups.of(c) for c in data.clips])
    fold = stratified_folds(np.array([c.domain for c in data.clips]), 3, 0)
    for k, (held_e, kept_e) in enumerate(system.fold_embeddings):
        held, kept = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        groups = range(len(system.groups.names))
        means = {g: kept_e[own[kept] == g, g].mean(axis=0) for g in groups if (own[kept] == g).any()}
        raw = np.array([min(np.linalg.norm(held_e[i, g] - m) for g, m in means.items()) for i in range(len(held))])
        reference = []
        for i, clip in enumerate(kept):
            g_own = own[clip]
            others = [j for j in range(len(kept)) if own[kept[j]] == g_own and j != i]
            candidates = [np.linalg.norm(kept_e[i, g] - m) for g, m in means.items() if g != g_own]
            if others:
                candidates.append(np.linalg.norm(kept_e[i, g_own] - kept_e[others, g_own].mean(axis=0)))
            reference.append(min(candidates))
        with np.load(runs.kfold.folder / f"fold{k}" / FOLD_FILE) as saved:
            np.testing.assert_allclose(saved["raw"], raw, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(saved["reference"], reference, rtol=1e-6, atol=1e-9)


def test_the_final_network_is_the_loo_one_and_the_threshold_gets_aligned_balanced_scores(runs, data):
    kfold, loo = runs.kfold, runs.loo
    state_k, state_l = kfold.system.model.state_dict(), loo.system.model.state_dict()
    assert all(torch.equal(state_k[name], state_l[name]) for name in state_k)  # fold networks change nothing
    np.testing.assert_array_equal(kfold.scores.scores, loo.scores.scores)
    fold = stratified_folds(np.array([c.domain for c in data.clips]), 3, 0)
    expected = np.full(len(data), np.nan)
    for k in range(3):
        with np.load(kfold.folder / f"fold{k}" / FOLD_FILE) as saved:
            held, kept = fold == k, fold != k
            expected[held] = align_scores(saved["raw"], saved["reference"], loo.scores.scores[kept], "log")
    np.testing.assert_allclose(kfold.scores.sub_scores["held_out_score"], expected, rtol=1e-12)
    target = np.array([c.domain == "target" for c in data.clips])
    np.testing.assert_allclose(kfold.scores.for_threshold(), balance_domains(expected, target), rtol=1e-12)
    assert len(kfold.scores.for_threshold()) == 10 + round(10 / 3) * 3
    # loo: the final network's leave-one-out scores, balanced; no held-out column
    np.testing.assert_array_equal(loo.scores.for_threshold(), balance_domains(loo.scores.scores, target))
    assert "held_out_score" not in loo.scores.sub_scores and not (loo.folder / "fold0").exists()


def test_a_rerun_reuses_the_finished_folds(runs, data):
    again = fit(data, runs.kfold.folder, runs.base / "cache")
    assert len(again.system.trained_on) == 1  # the final network only
    np.testing.assert_array_equal(again.scores.for_threshold(), runs.kfold.scores.for_threshold())
    other_seed = fit(data, runs.kfold.folder, runs.base / "cache", seed=1)  # other settings: the folds train again
    assert len(other_seed.system.trained_on) == 4


def test_kfold_needs_two_clips_of_each_domain(data, tmp_path):
    one_target = data.subset([i for i, c in enumerate(data.clips) if c.domain == "source"] +
                             [next(i for i, c in enumerate(data.clips) if c.domain == "target")])
    with pytest.raises(ValueError, match="threshold_scores=kfold needs at least 2"):
        fit(one_target, tmp_path / "m", tmp_path / "cache")
    assert not (tmp_path / "m").exists()


def test_a_group_without_clips_has_no_prototype():
    rng = np.random.default_rng(0)
    per_group = rng.normal(size=(3, 3, 4))
    own = np.array([0, 0, 2])  # group 1 has no clip (all of them held out of a fold network)
    prototypes = Prototypes.fit(["a", "b", "c"], per_group[np.arange(3), own], own)
    distances = prototypes.distances(per_group)
    assert np.all(distances[:, 1] == np.inf) and np.isfinite(distances[:, [0, 2]]).all()
    assert np.isfinite(proto_min(prototypes, distances).scores).all()
