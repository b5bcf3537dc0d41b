"""Prototype distances (P_proto's proto_min): one normal prototype per group, with an honest train form.

P_proto embeds each clip once under each group's FiLM condition, so a clip brings one embedding per group,
(N, G, D), rather than the single row of the scikit-learn-style scorers beside this module; the score is
the least distance over the groups (asdx.systems.proto). Pure NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Prototypes:
    """Group means of the normalised train embeddings, with each group's size for the leave-one-out form."""

    names: list[str]
    means: np.ndarray   # (G, D)
    counts: np.ndarray  # (G,)

    def __post_init__(self):
        self.names = [str(name) for name in self.names]  # load_state gives an array of strings

    @classmethod
    def fit(cls, names: list[str], embeddings: np.ndarray, groups: np.ndarray) -> "Prototypes":
        """A group without clips (a fold network's, when its clips are all held out) has no prototype: its
        mean is NaN and every distance to it inf."""
        counts = np.bincount(groups, minlength=len(names))
        means = np.stack([embeddings[groups == g].mean(axis=0) if counts[g] else
                          np.full(embeddings.shape[1], np.nan) for g in range(len(names))])
        return cls(list(names), means, counts)

    def distances(self, per_group: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        """per_group (N, G, D): each clip embedded under each group's condition -> (N, G) L2 distances.

        own (train clips): a clip's own group uses the mean without it, (n p - e) / (n - 1); a
        group of one clip has no such mean, so that entry is inf.
        """
        centres = np.broadcast_to(self.means, per_group.shape).copy()
        if own is not None:
            rows = np.arange(len(own))
            n = self.counts[own].astype(np.float64)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                centres[rows, own] = (n * self.means[own] - per_group[rows, own]) / (n - 1)
        out = np.linalg.norm(per_group - centres, axis=2)
        if own is not None:
            out[np.arange(len(own)), own] = np.where(self.counts[own] > 1, out[np.arange(len(own)), own], np.inf)
        out[:, self.counts == 0] = np.inf
        return out


__all__ = ["Prototypes"]
