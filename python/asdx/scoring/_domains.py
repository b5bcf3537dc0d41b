"""Splitting training rows by domain, shared by the scorers that fit one model per domain."""

from __future__ import annotations

import numpy as np

DOMAINS = ("source", "target")


def domain_masks(domain, n_rows: int) -> dict[str, np.ndarray]:
    """{"source": mask, "target": mask} from labels "source"/"target" or 0/1; all rows are
    "source" when domain is None. A domain without rows is left out."""
    if domain is None:
        return {"source": np.ones(n_rows, dtype=bool)}
    labels = np.asarray(domain)
    if labels.shape != (n_rows,):
        raise ValueError(f"domain: expected {n_rows} labels (one per row of X), got shape {labels.shape}.")
    if labels.dtype.kind in "iub":
        valid = np.isin(labels, (0, 1))
        names = np.where(labels == 1, "target", "source")
    else:
        names = labels.astype(str)
        valid = np.isin(names, DOMAINS)
    if not valid.all():
        bad = labels[~valid][0]
        raise ValueError(f"domain: labels must be 'source'/'target' or 0/1, got {bad!r}.")
    masks = {name: names == name for name in DOMAINS}
    return {name: mask for name, mask in masks.items() if mask.any()}
