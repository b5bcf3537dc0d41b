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


class RankMap:
    """A strictly increasing map of raw scores onto their rank among honest references, with tails.

    Why: a step-function rank among n train scores gives one rank to every score
    between two references, 0 below the lowest and 1 above the highest, so test
    clips tie and the order is lost at both ends (issue 19: 114 of 720 synthetic
    test clips at 0, clearly anomalous clips tied at the cap). This map keeps the
    order everywhere:

      - at the distinct reference values u_j: F(u_j) = (#below + (#equal + 1) / 2)
        / (n + 1), i.e. i / (n + 1) at the i-th smallest of n distinct values (ties
        get the mean of their positions). A new score drawn like the references lies
        below the i-th smallest with probability i / (n + 1), so the rank of a new
        normal clip is uniform at every reference value, as a conformal p-value is;
        the mid-rank (i - 1/2) / n leaves 1 / (2n) above the highest reference
        instead of 1 / (n + 1): with 6 target references 7 % instead of 14 %, and
        normal clips above log(10) 15 % of the time instead of 10 %.
      - between them: linear interpolation, so with 6 target references a score
        between two of them gets a rank between theirs, not one of 7 step values;
      - above the highest value: an exponential upper tail, 1 - F(s) =
        (1 - F(u_max)) exp(-(s - u_max) / upper_scale): exceedance(s) grows
        linearly in the raw score and never saturates;
      - below the lowest value: a hyperbolic lower tail, F(s) = F(u_min) /
        (1 + (u_min - s) / lower_scale), which leaves u_min with the slope of log F
        an exponential tail would have and stays positive (distinct) for every
        finite s; an exponential lower tail underflows to 0, a tie, some 745
        scales below the lowest reference.

    Each tail scale is the secant of the curve it continues over the half of the
    references it extends: upper_scale from the last value with F <= 1/2 to the
    highest, in (raw score, -log(1 - F)); lower_scale from the lowest to the first
    value with F >= 1/2, in (raw score, log F). Under an exponential tail that is
    the true slope; under a lighter (Gaussian) tail the extension is conservative.
    A reference with one distinct value has no spread: both scales are then 1.

    exceedance(s) = -log(1 - F(s)) is what fusion fuses and submits: for a score
    drawn like the references F(s) is about uniform and -log(1 - U) ~ Exp(1), a
    gamma with shape 1, so the gamma threshold fitted on it is well specified
    (tests/test_fusion_scoring.py measures P(exceedance > log 10) = 0.09-0.12 at
    n = 6, 10, 46). In the upper tail it is computed without forming 1 - F, so it
    stays exact where F rounds to 1. Two scores get the same value only if they are
    equal (or closer than the double resolution of the result).
    """

    def __init__(self, reference):
        ref = prepare(reference, "reference", ndim=1, dtype=np.float64, allow_empty=False).numpy()
        self.knots, counts = np.unique(ref, return_counts=True)
        self.n = int(ref.size)
        self.positions = (np.cumsum(counts) - counts + 0.5 * (counts + 1)) / (self.n + 1)  # strictly increasing
        last = self.knots.size - 1
        if last == 0:
            self.upper_scale = self.lower_scale = 1.0
            return
        # positions[0] < 1/2 < positions[last] when there are two or more distinct values
        a = int(np.searchsorted(self.positions, 0.5, side="right")) - 1
        b = int(np.searchsorted(self.positions, 0.5, side="left"))
        exceed = -np.log1p(-self.positions)
        self.upper_scale = float((self.knots[last] - self.knots[a]) / (exceed[last] - exceed[a]))
        self.lower_scale = float((self.knots[b] - self.knots[0])
                                 / (np.log(self.positions[b]) - np.log(self.positions[0])))

    def exceedance(self, scores) -> np.ndarray:
        """-log(1 - F(s)) per score: >= 0, strictly increasing in s, unbounded above."""
        s = prepare(scores, "scores", ndim=1, dtype=np.float64).numpy()
        out = np.empty_like(s)
        above, under = s > self.knots[-1], s < self.knots[0]
        inside = ~(above | under)
        out[inside] = -np.log1p(-np.interp(s[inside], self.knots, self.positions))
        out[above] = -np.log1p(-self.positions[-1]) + (s[above] - self.knots[-1]) / self.upper_scale
        out[under] = -np.log1p(-self.positions[0] / (1.0 + (self.knots[0] - s[under]) / self.lower_scale))
        return out

    def rank(self, scores) -> np.ndarray:
        """F(s) in (0, 1): i / (n + 1) at the references, interpolated between, tails outside."""
        return exceedance_to_rank(self.exceedance(scores))


def exceedance_to_rank(exceedance) -> np.ndarray:
    """F = 1 - exp(-exceedance): the rank an exceedance stands for (it rounds to 1 far in the upper tail)."""
    return -np.expm1(-np.asarray(exceedance, dtype=np.float64))


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
