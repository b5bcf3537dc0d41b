"""Honest threshold scores shared by ae and proto (asdx.systems._threshold_scores) and the AE's kfold path:
scale alignment against direct NumPy, domain balance, fold models that never see their fold, counts at 40 + 6."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from asdx.splits import stratified_folds
from asdx.systems._threshold_scores import ALIGNMENTS, align_scores, balance_domains, cross_fit
from asdx.systems.ae import AEConfig, AESystem

SMALL = {"n_mels": 16, "n_frames": 2, "device": "cpu", "batch_size": 32}  # 32-dim vectors: fast


def random_clips(n_source=8, n_target=4, vectors=12, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    clips = [torch.from_numpy(rng.standard_normal((vectors, dim)).astype(np.float32))
             for _ in range(n_source + n_target)]
    return clips, np.array(["source"] * n_source + ["target"] * n_target)


# ----------------------------------------------------------------------------- align_scores
positive = arrays(np.float64, st.integers(2, 30), elements=st.floats(1e-3, 1e3))


@settings(max_examples=60, deadline=None)
@given(held=positive, fold=positive, seed=st.integers(0, 2**31 - 1))
def test_alignment_equals_a_direct_computation(held, fold, seed):
    rng = np.random.default_rng(seed)
    final = fold * rng.uniform(0.2, 5.0) + rng.uniform(0, 2, size=fold.shape)  # the same clips, another model
    if np.ptp(fold) == 0:
        with pytest.raises(ValueError, match="constant"):
            align_scores(held, fold, final, "linear")
        return
    lf, lk, lh = np.log(final), np.log(fold), np.log(held)
    expected = {"log": np.exp(lf.mean() + np.std(lf, ddof=1) * (lh - lk.mean()) / np.std(lk, ddof=1)),
                "linear": final.mean() + np.std(final, ddof=1) * (held - fold.mean()) / np.std(fold, ddof=1),
                "ratio": held * np.median(final) / np.median(fold), "none": held}
    for method in ALIGNMENTS:
        if method in ("log", "linear") and np.ptp(lk if method == "log" else fold) == 0:
            continue
        np.testing.assert_allclose(align_scores(held, fold, final, method), expected[method], rtol=1e-9,
                                   err_msg=method)


def test_alignment_maps_the_fold_scale_onto_the_final_one():
    """A fold model whose scores are the final model's times 7 plus an offset in log space: its held-out
    scores come back exactly on the final model's scale."""
    rng = np.random.default_rng(1)
    final_reference = rng.gamma(3.0, 2.0, 40)
    held_final = rng.gamma(3.0, 2.5, 10)  # what the final model would give the held-out clips
    to_fold = lambda x: 7.0 * x**1.3  # noqa: E731 (a monotone change of scale, exact in log space)
    aligned = align_scores(to_fold(held_final), to_fold(final_reference), final_reference, "log")
    np.testing.assert_allclose(aligned, held_final, rtol=1e-9)
    raw = align_scores(to_fold(held_final), to_fold(final_reference), final_reference, "none")
    assert np.all(raw > 3 * held_final)  # unaligned: the fold model's scale


def test_alignment_errors_and_infinite_references():
    with pytest.raises(ValueError, match="method"):
        align_scores([1.0], [1.0, 2.0], [1.0, 2.0], "rank")
    with pytest.raises(ValueError, match="same clips"):
        align_scores([1.0], [1.0, 2.0, 3.0], [1.0, 2.0], "log")
    with pytest.raises(ValueError, match="> 0"):
        align_scores([-1.0], [1.0, 2.0], [1.0, 2.0], "log")
    with pytest.raises(ValueError, match="at least 2"):
        align_scores([1.0], [1.0, np.inf], [1.0, 2.0], "log")
    # proto: a clip alone in its group has an inf leave-one-out score; it is left out of both references
    got = align_scores([2.0], [1.0, 3.0, np.inf], [2.0, 6.0, 5.0], "linear")
    np.testing.assert_allclose(got, align_scores([2.0], [1.0, 3.0], [2.0, 6.0], "linear"))


# ----------------------------------------------------------------------------- balance_domains
@pytest.mark.parametrize("n_source, n_target, repeat", [(40, 6, 7), (990, 10, 99), (4, 1, 4), (3, 6, 1), (5, 0, 0)])
def test_balance_repeats_the_target_scores(n_source, n_target, repeat):
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, size=n_source + n_target)
    target = np.zeros(n_source + n_target, dtype=bool)
    target[rng.choice(len(target), n_target, replace=False)] = True
    out = balance_domains(scores, target)
    assert len(out) == n_source + repeat * n_target
    np.testing.assert_array_equal(out[:n_source], scores[~target])
    np.testing.assert_array_equal(np.sort(out[n_source:]), np.sort(np.repeat(scores[target], repeat)))
    if n_target:  # the two domains weigh within one target clip of each other
        assert abs(repeat * n_target - n_source) <= max(n_target, 1) / 2 + 1e-9 or repeat == 1
    with pytest.raises(ValueError, match="is_target"):
        balance_domains(scores, target[:-1])


def test_folds_are_stratified_and_cover_every_clip_once():
    domains = np.array(["source"] * 40 + ["target"] * 6)
    for k in (2, 3, 5):
        fold = stratified_folds(domains, k, 0)
        assert sorted(set(fold.tolist())) == list(range(k))
        for f in range(k):  # every fold model trains on source and target clips
            kept = domains[fold != f]
            assert (kept == "target").sum() >= 6 - -(-6 // k) and (kept == "source").sum() >= 40 - -(-40 // k)


def test_cross_fit_scores_each_clip_by_the_one_model_that_left_it_out():
    """The shared cross-fitter (ae and proto): fold k's model sees only the clips outside fold k, each held-out
    score lands on its own clip, and pooled aligns each fold by its own model's reference scores."""
    rng = np.random.default_rng(5)
    domains = np.array(["source"] * 17 + ["target"] * 5)
    truth = rng.gamma(3.0, 1.0, len(domains))  # a "model" scores clip i as truth[i] * (its fold's factor)
    final = truth * 2.0
    calls = []

    def fit_and_score(k, held, kept):
        calls.append((k, held, kept))
        return truth[held] * (k + 1), truth[kept] * (k + 1) + 0.01 * kept

    folds = cross_fit(domains, 3, 7, fit_and_score)
    np.testing.assert_array_equal(folds.fold_of, stratified_folds(domains, 3, 7))
    assert [k for k, _, _ in calls] == [0, 1, 2]
    for k, held, kept in calls:
        assert set(held) == set(np.flatnonzero(folds.fold_of == k)) and set(kept) == set(range(22)) - set(held)
    aligned, raw = folds.pooled(final)
    for k, held, kept in calls:
        np.testing.assert_array_equal(raw[held], truth[held] * (k + 1))
        np.testing.assert_array_equal(aligned[held], align_scores(truth[held] * (k + 1),
                                                                  truth[kept] * (k + 1) + 0.01 * kept, final[kept]))
    assert np.isfinite(aligned).all()


# ----------------------------------------------------------------------------- the AE's kfold path
class Spy(AESystem):
    """Records the clips (as their first vector's sum) each fold model trained on."""

    trained_on: list = []

    def fit_fold_model(self, vectors, domains, kept, checkpoint=None):
        Spy.trained_on.append({float(vectors[i].sum()) for i in kept})
        return super().fit_fold_model(vectors, domains, kept, checkpoint)


def test_fold_models_never_see_their_fold_and_the_scores_are_aligned_and_balanced():
    clips, domains = random_clips(n_source=9, n_target=3)
    config = AEConfig(epochs=2, threshold_scores="kfold", folds=3, **SMALL)
    Spy.trained_on = []
    system = Spy(config).fit_vectors(clips, domains, progress=False)
    fold = stratified_folds(domains, 3, config.seed)
    np.testing.assert_array_equal(system.folds_, fold)
    keys = [float(c.sum()) for c in clips]
    for k, trained in enumerate(Spy.trained_on):
        assert trained == {keys[i] for i in np.flatnonzero(fold != k)}  # every clip but its fold's
    expected = np.full(len(clips), np.nan)
    for k in range(3):
        held, kept = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        model = system.fit_fold_model(clips, domains, kept)  # the same recipe: the same fold model
        raw = model.score_vectors([clips[i] for i in held])
        np.testing.assert_array_equal(system.out_of_fold_raw_[held], raw)
        expected[held] = align_scores(raw, model.score_vectors([clips[i] for i in kept]),
                                      system.train_scores_[kept], "log")
    np.testing.assert_allclose(system.out_of_fold_scores_, expected, rtol=1e-12)
    scores = system.machine_train_scores()
    np.testing.assert_array_equal(scores.scores, system.out_of_fold_scores_)
    np.testing.assert_array_equal(scores.for_threshold(), balance_domains(expected, domains == "target"))
    unbalanced = AESystem(AEConfig(**{**config.__dict__, "balance_domains": False})).fit_vectors(clips, domains,
                                                                                                 progress=False)
    np.testing.assert_array_equal(unbalanced.machine_train_scores().for_threshold(), system.out_of_fold_scores_)


def test_a_fold_models_held_out_scores_do_not_depend_on_its_own_fold():
    """Changing one clip leaves the raw scores of the other clips of its fold as they were (their fold
    model never trained on it) and changes those of the other folds (their models did)."""
    clips, domains = random_clips(n_source=9, n_target=3)
    config = AEConfig(epochs=2, threshold_scores="kfold", folds=3, **SMALL)
    base = AESystem(config).fit_vectors(clips, domains, progress=False)
    fold = stratified_folds(domains, 3, config.seed)
    changed = 0
    altered = list(clips)
    altered[changed] = clips[changed] + 3.0
    other = AESystem(config).fit_vectors(altered, domains, progress=False)
    same_fold = (fold == fold[changed]) & (np.arange(len(clips)) != changed)
    np.testing.assert_array_equal(other.out_of_fold_raw_[same_fold], base.out_of_fold_raw_[same_fold])
    assert not np.any(other.out_of_fold_raw_[fold != fold[changed]] == base.out_of_fold_raw_[fold != fold[changed]])


def test_counts_at_40_plus_6():
    """The number of honest scores per machine at the small size: kfold 46 (each clip once), the gamma fit
    gets 40 + 7 x 6 = 82 with the domains balanced; holdout 5 (4 + 1)."""
    clips, domains = random_clips(n_source=40, n_target=6, vectors=4)
    kfold = AESystem(AEConfig(epochs=1, threshold_scores="kfold", **SMALL)).fit_vectors(clips, domains,
                                                                                         progress=False)
    scores = kfold.machine_train_scores()
    assert len(scores.scores) == 46 and np.isfinite(scores.scores).all() and len(set(scores.scores)) == 46
    assert len(scores.for_threshold()) == 82 and len(set(scores.for_threshold())) == 46
    holdout = AESystem(AEConfig(epochs=1, threshold_scores="holdout", balance_domains=False, **SMALL))
    assert len(holdout.fit_vectors(clips, domains, progress=False).machine_train_scores().for_threshold()) == 5
