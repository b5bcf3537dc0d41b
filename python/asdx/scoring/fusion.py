"""Rank normalisation and element-wise fusion of anomaly scores (T_fusion, system report §2.3).

Different scorers (kNN distances, GMM negative log-likelihoods) live on
unrelated scales; mapping each onto its rank among the train-normal scores
makes them comparable before an element-wise min or mean.
"""

from __future__ import annotations

import numpy as np

from asdx._arrays import prepare


def rank_normalize(scores, reference) -> np.ndarray:
    """Average-rank position of each score within `reference`, in [0, 1].

    (#reference < s + 0.5 * #reference == s) / len(reference): 0 below every
    reference score, 1 above all of them, ties counted half (mid-rank).
    """
    s = prepare(scores, "scores", ndim=1, dtype=np.float64).numpy()
    ref = np.sort(prepare(reference, "reference", ndim=1, dtype=np.float64, allow_empty=False).numpy())
    below = np.searchsorted(ref, s, side="left")
    at_or_below = np.searchsorted(ref, s, side="right")
    return (below + 0.5 * (at_or_below - below)) / ref.size


def _stack(score_arrays, name: str) -> np.ndarray:
    if len(score_arrays) == 0:
        raise ValueError(f"{name}: needs at least one score array.")
    arrays = [prepare(a, f"scores[{i}]", ndim=1, dtype=np.float64).numpy() for i, a in enumerate(score_arrays)]
    for i, a in enumerate(arrays[1:], start=1):
        if a.shape != arrays[0].shape:
            raise ValueError(f"scores[{i}]: shape {a.shape} does not match scores[0]'s {arrays[0].shape}.")
    return np.stack(arrays)


def min_fusion(*score_arrays) -> np.ndarray:
    """Element-wise minimum: a clip is anomalous only if every scorer says so."""
    return _stack(score_arrays, "min_fusion").min(axis=0)


def mean_fusion(*score_arrays) -> np.ndarray:
    """Element-wise mean."""
    return _stack(score_arrays, "mean_fusion").mean(axis=0)
