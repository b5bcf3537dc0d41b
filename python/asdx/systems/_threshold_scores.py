"""Honest threshold scores for the systems that train one model per machine (ae, proto).

The gamma threshold is fitted on train-normal scores, so they must be scores of clips the scoring model
did not train on, numerous enough to fit, and mixed by domain as the test set is. Three parts, shared:
  - cross_fit: the fold models' out-of-fold scores (domain-stratified folds, asdx.splits.stratified_folds),
    pooled and aligned by CrossFit.pooled;
  - align_scores: a fold model's held-out scores put on the final model's scale, by the map between the
    two models' scores of clips both trained on (each model has its own offset and spread);
  - balance_domains: the target clips' scores repeated so both domains weigh alike in the fit (the test
    set is half target, the train set ~1 % to 13 % target).
Measured and argued in docs/threshold_scores.md (benchmarks/calibration_ae.py, calibration_proto.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from asdx.splits import stratified_folds

ALIGNMENTS = ("log", "linear", "ratio", "none")


def align_scores(held, fold_reference, final_reference, method: str = "log") -> np.ndarray:
    """A fold model's held-out scores put on the final model's scale.

    fold_reference, final_reference: the fold model's and the final model's scores of the SAME clips, ones
    both models trained on (the fold model's training clips), in the same order. How far a held-out clip
    lies above the fold model's own clips, in units of their spread, is carried over to the final model:
      - "log": exp(m_f + s_f (log x - m_k) / s_k), m and s the mean and standard deviation (ddof 1) of the
        log reference scores (k: fold model, f: final model); every score must be > 0;
      - "linear": the same map on the scores themselves;
      - "ratio": x * median(final_reference) / median(fold_reference);
      - "none": unchanged (the raw pooled out-of-fold scores).
    Non-finite reference scores (a proto clip alone in its group) are left out of the references.
    """
    held = np.asarray(held, dtype=np.float64)
    fold_reference = np.asarray(fold_reference, dtype=np.float64)
    final_reference = np.asarray(final_reference, dtype=np.float64)
    if method not in ALIGNMENTS:
        raise ValueError(f"method: expected one of {ALIGNMENTS}, got {method!r}.")
    if method == "none":
        return held.copy()
    if fold_reference.shape != final_reference.shape:
        raise ValueError(f"fold_reference, final_reference: the scores of the same clips, got "
                         f"{len(fold_reference)} and {len(final_reference)}.")
    both = np.isfinite(fold_reference) & np.isfinite(final_reference)
    fold_reference, final_reference = fold_reference[both], final_reference[both]
    if len(fold_reference) < 2:
        raise ValueError(f"fold_reference: {len(fold_reference)} finite scores; the alignment needs at least 2.")
    if method == "ratio":
        return held * np.median(final_reference) / np.median(fold_reference)
    if method == "log":
        if min(held.min(initial=np.inf), fold_reference.min(), final_reference.min()) <= 0:
            raise ValueError("align_scores: method='log' needs scores > 0.")
        held, fold_reference, final_reference = np.log(held), np.log(fold_reference), np.log(final_reference)
    if not np.ptp(fold_reference) > 0:
        raise ValueError("fold_reference: constant scores; there is no spread to align by.")
    spread = fold_reference.std(ddof=1)
    mapped = final_reference.mean() + final_reference.std(ddof=1) * (held - fold_reference.mean()) / spread
    return np.exp(mapped) if method == "log" else mapped


@dataclass
class FoldScores:
    """One fold model's scores: of its held-out clips (raw) and of its own training clips (reference)."""

    held: np.ndarray       # indices of the clips the fold model did not train on
    kept: np.ndarray       # indices of its training clips
    raw: np.ndarray        # its scores of the held clips, in that order
    reference: np.ndarray  # its scores of the kept clips, in that order (align_scores' fold_reference)


@dataclass
class CrossFit:
    """The out-of-fold scores of k-fold cross-fitting: fold_of (each clip's fold) and one FoldScores per fold."""

    fold_of: np.ndarray
    folds: list[FoldScores]

    def pooled(self, final_reference) -> tuple[np.ndarray, np.ndarray]:
        """(aligned, raw): every clip's held-out score, put on the final model's scale (align_scores, with
        final_reference the final model's scores of all clips) and as its fold model gave it."""
        final_reference = np.asarray(final_reference, dtype=np.float64)
        raw, aligned = np.full(len(self.fold_of), np.nan), np.full(len(self.fold_of), np.nan)
        for fold in self.folds:
            raw[fold.held] = fold.raw
            aligned[fold.held] = align_scores(fold.raw, fold.reference, final_reference[fold.kept])
        return aligned, raw


def cross_fit(domains, folds: int, seed: int, fit_and_score: Callable, desc: str | None = None) -> CrossFit:
    """k-fold cross-fitting, clip-level: each clip scored by a model that did not train on it.

    The clips are split into `folds` seeded, domain-stratified folds; fit_and_score(k, held, kept) trains
    fold model k on the clips `kept` (indices) and returns (its scores of the clips `held`, its scores of
    the clips `kept`), each in that order. desc: a progress bar's label (None: no bar).
    """
    fold_of = stratified_folds(np.asarray(domains), folds, seed)
    results = []
    for k in tqdm(range(folds), desc=desc, disable=desc is None):
        held, kept = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        raw, reference = fit_and_score(k, held, kept)
        results.append(FoldScores(held, kept, np.asarray(raw, dtype=np.float64),
                                  np.asarray(reference, dtype=np.float64)))
    return CrossFit(fold_of, results)


def balance_domains(scores, is_target) -> np.ndarray:
    """The threshold scores with each target clip's score repeated round(n_source / n_target) times (at least
    once), so that the gamma fit weighs the two domains alike, as the DCASE test set does (half its clips
    are target). Source scores first, then the repeated target scores; unchanged without target clips."""
    scores = np.asarray(scores, dtype=np.float64)
    is_target = np.asarray(is_target, dtype=bool)
    if scores.shape != is_target.shape:
        raise ValueError(f"is_target: {len(is_target)} flags for {len(scores)} scores.")
    n_target = int(is_target.sum())
    if n_target == 0 or n_target == len(scores):
        return scores.copy()
    repeat = max(1, round((len(scores) - n_target) / n_target))
    return np.concatenate([scores[~is_target], np.repeat(scores[is_target], repeat)])


__all__ = ["ALIGNMENTS", "CrossFit", "FoldScores", "align_scores", "balance_domains", "cross_fit"]
