"""Seeded splits of training rows, stratified by group (domain, or (machine, domain)): holdouts and folds.

The one home of the splits drawn in asdx: the AE's clip-level holdout, the out-of-fold folds of the AE and
proto threshold scores, the BEATs systems' validation split, and the folds of DiagGMMScorer.train_scores_.
Each group's rows are shuffled by one seeded generator, the groups taken in sorted order, so a split
depends on the labels and the seed only. NumPy only: scoring/ and systems/ both use it.
"""

from __future__ import annotations

import math
from typing import Hashable, Literal, Sequence

import numpy as np

ROUNDINGS = ("nearest", "up")
DRAWS = ("asdx", "sklearn")


def groups_of(labels: Sequence[Hashable]) -> list[np.ndarray]:
    """Row indices (int64, ascending) of each group, the groups in sorted label order.

    labels: one per row; strings, numbers or tuples such as (machine, domain)."""
    members: dict = {}
    for row, label in enumerate(labels):
        members.setdefault(label, []).append(row)
    return [np.asarray(members[label], dtype=np.int64) for label in sorted(members)]


def holdout(labels: Sequence[Hashable], fraction: float, seed: int, *, rounding: str = "nearest",
            minimum: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): ascending int64 row indices, a seeded holdout of `fraction` of each group's rows.

    Of a group of n rows, fraction * n rounded ("nearest": half up; "up": ceil) are held out at random, at
    most n - 1: every group keeps a row. minimum: when fewer (but some) rows are held in all, more of the
    largest group's rows (the next in its shuffled order, still keeping one) are held until there are.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}.")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction: expected 0 <= fraction < 1, got {fraction}.")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    shuffled = []
    for members in groups_of(labels):
        members = members[rng.permutation(len(members))]
        share = fraction * len(members)
        n_held = math.ceil(share) if rounding == "up" else math.floor(share + 0.5)
        held[members[: min(n_held, len(members) - 1)]] = True
        shuffled.append(members)
    if shuffled and 0 < held.sum() < minimum:
        largest = max(shuffled, key=len)  # the first of the largest groups in sorted order
        n_held = min(int(held[largest].sum()) + minimum - int(held.sum()), len(largest) - 1)
        held[largest[:n_held]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def stratified_folds(labels: Sequence[Hashable], n_folds: int, seed, *, stratify: bool = True,
                     draws: Literal["asdx", "sklearn"] = "asdx") -> np.ndarray:
    """Fold index (int64, 0..n_folds-1) of each row; each group's rows spread evenly over the folds.

    The rows are dealt round-robin, group after group, the dealing continuing across groups: fold sizes
    differ by one at most, and so do a group's counts in any two folds. stratify=False: all rows one group.
    Which row gets which fold is drawn:
      - draws="asdx" (seed: an int): a numpy Generator shuffles each group's rows (groups in sorted order)
        and deals them;
      - draws="sklearn" (seed: an int or a numpy RandomState): the draws of scikit-learn's
        StratifiedKFold(n_folds, shuffle=True, random_state=seed) (groups in order of first appearance,
        each group's fold labels shuffled), or with stratify=False those of KFold(n_folds, shuffle=True).
        Kept so that DiagGMMScorer's out-of-fold scores stay those it was first made with.
    Folds hold rows of every group only when each group has at least n_folds rows.
    """
    if draws not in DRAWS:
        raise ValueError(f"draws: expected one of {DRAWS}, got {draws!r}.")
    n = len(labels)
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds: expected 2 <= n_folds <= {n} (the rows), got {n_folds}.")
    groups = groups_of(labels) if stratify else [np.arange(n, dtype=np.int64)]
    fold = np.empty(n, dtype=np.int64)
    dealt = 0
    if draws == "asdx":
        rng = np.random.default_rng(seed)
        for members in groups:
            fold[members[rng.permutation(len(members))]] = (dealt + np.arange(len(members))) % n_folds
            dealt += len(members)
        return fold
    rng = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
    for members in sorted(groups, key=lambda m: m[0]):
        dealing = np.sort((dealt + np.arange(len(members))) % n_folds)
        order = rng.permutation(len(members))
        if stratify:  # StratifiedKFold: the group's fold labels shuffled, given in row order
            fold[members] = dealing[order]
        else:         # KFold: the shuffled rows cut into consecutive folds
            fold[members[order]] = dealing
        dealt += len(members)
    return fold


__all__ = ["DRAWS", "ROUNDINGS", "groups_of", "holdout", "stratified_folds"]
