"""asdx.splits: the one seeded, domain-stratified splitter (holdouts and folds) of the systems and scorers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold, StratifiedKFold

from asdx.splits import groups_of, holdout, stratified_folds
from asdx.systems._features import split_validation
from asdx.systems.ae import holdout_clips

labels_strategy = st.lists(st.sampled_from(["source", "target", "other"]), min_size=2, max_size=60)

# 12 clips as a machine's train set might list them (a target clip first); each caller's split of them, as asdx
# drew it before the splitter had one home (systems/_threshold_scores.py, systems/ae.py, systems/_features.py)
DOMAINS = np.array(["target", "source", "source", "target", "source", "source", "source", "source", "target",
                    "source", "source", "source"])


@settings(max_examples=60, deadline=None)
@given(labels_strategy, st.integers(2, 6), st.integers(0, 2**32 - 1), st.sampled_from(["asdx", "sklearn"]))
def test_folds_hold_every_row_once_balanced_per_group(labels, n_folds, seed, draws):
    n_folds = min(n_folds, len(labels))
    fold = stratified_folds(labels, n_folds, seed, draws=draws)
    assert fold.shape == (len(labels),) and fold.min() >= 0 and fold.max() < n_folds  # each row in one fold
    sizes = np.bincount(fold, minlength=n_folds)
    assert sizes.sum() == len(labels) and sizes.max() - sizes.min() <= 1
    for members in groups_of(labels):  # a group's counts in two folds differ by one at most
        counts = np.bincount(fold[members], minlength=n_folds)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(stratified_folds(labels, n_folds, seed, draws=draws), fold)  # seeded


@settings(max_examples=60, deadline=None)
@given(labels_strategy, st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.9]), st.integers(0, 2**32 - 1),
       st.sampled_from(["nearest", "up"]), st.integers(0, 4))
def test_holdout_partitions_rows_and_keeps_one_per_group(labels, fraction, seed, rounding, minimum):
    kept, held = holdout(labels, fraction, seed, rounding=rounding, minimum=minimum)
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))  # each row once
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    round_ = np.ceil if rounding == "up" else (lambda x: np.floor(x + 0.5))
    groups = groups_of(labels)
    largest = max(range(len(groups)), key=lambda g: len(groups[g]))  # the first of the largest, sorted order
    shares = [min(int(round_(fraction * len(m))), len(m) - 1) for m in groups]
    in_held = [int(np.isin(m, held).sum()) for m in groups]
    for g, members in enumerate(groups):
        assert in_held[g] <= len(members) - 1  # every group keeps a row
        if g != largest:
            assert in_held[g] == shares[g]
    if 0 < sum(shares) < minimum:  # topped up to `minimum` from the largest group, which still keeps a row
        assert len(held) == minimum or in_held[largest] == len(groups[largest]) - 1
    else:
        assert len(held) == sum(shares)
    again = holdout(labels, fraction, seed, rounding=rounding, minimum=minimum)
    np.testing.assert_array_equal(again[1], held)


def test_seeds_draw_differently():
    labels = ["source"] * 30 + ["target"] * 10
    assert not np.array_equal(stratified_folds(labels, 3, 0), stratified_folds(labels, 3, 1))
    assert not np.array_equal(holdout(labels, 0.2, 0)[1], holdout(labels, 0.2, 1)[1])


def test_each_caller_keeps_its_split():
    """The callers' splits of DOMAINS, pinned as they were drawn before the splitter was shared."""
    np.testing.assert_array_equal(stratified_folds(DOMAINS, 3, 13711), [1, 1, 1, 2, 0, 1, 0, 0, 0, 2, 2, 2])
    np.testing.assert_array_equal(np.flatnonzero(holdout_clips(DOMAINS, 0.1, 13711)), [5, 7, 8])
    clips = [SimpleNamespace(machine=m, domain=d) for m, d in zip(["fan"] * 6 + ["valveEmu"] * 6, DOMAINS)]
    train, validation = split_validation(clips, 0.2, 0)
    np.testing.assert_array_equal(validation, [4, 6])
    np.testing.assert_array_equal(train, [0, 1, 2, 3, 5, 7, 8, 9, 10, 11])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=4, max_size=50), st.integers(2, 5), st.integers(0, 2**32 - 1),
       st.booleans())
def test_sklearn_draws_are_scikit_learns(codes, n_folds, seed, stratify):
    """draws="sklearn" gives StratifiedKFold's / KFold's folds (shuffle=True): DiagGMMScorer's out-of-fold
    scores keep the folds they were made with. Classes in order of first appearance, as scikit-learn takes them."""
    codes = np.asarray(codes)
    n_folds = min(n_folds, int(np.bincount(codes)[np.unique(codes)].min()) if stratify else len(codes))
    if n_folds < 2:
        return
    splitter = (StratifiedKFold if stratify else KFold)(n_folds, shuffle=True, random_state=seed)
    expected = np.empty(len(codes), dtype=np.int64)
    for k, (_, held) in enumerate(splitter.split(np.zeros((len(codes), 1)), codes)):
        expected[held] = k
    np.testing.assert_array_equal(stratified_folds(codes, n_folds, seed, stratify=stratify, draws="sklearn"),
                                  expected)
    state = np.random.RandomState(seed)  # a RandomState is used as given, as scikit-learn uses it
    np.testing.assert_array_equal(stratified_folds(codes, n_folds, state, stratify=stratify, draws="sklearn"),
                                  expected)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="n_folds"):
        stratified_folds(["source"] * 3, 5, 0)
    with pytest.raises(ValueError, match="draws"):
        stratified_folds(["source"] * 3, 2, 0, draws="other")
    with pytest.raises(ValueError, match="rounding"):
        holdout(["source"] * 3, 0.1, 0, rounding="down")
    with pytest.raises(ValueError, match="fraction"):
        holdout(["source"] * 3, 1.0, 0)
