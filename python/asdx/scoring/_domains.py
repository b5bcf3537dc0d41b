"""Domain labels of training rows, shared by the scorers that fit one model per domain."""

from __future__ import annotations

import numpy as np
import torch

DOMAINS = ("source", "target")


def domain_codes(domain, n_rows: int) -> np.ndarray:
    """Labels "source"/"target" (any case) or 0/1 -> int64 codes 0 (source) / 1 (target).

    Raises a ValueError naming `domain` for a wrong length or an unknown label.
    """
    if isinstance(domain, torch.Tensor):
        domain = domain.detach().cpu().numpy()
    labels = np.asarray(domain)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"domain: expected {n_rows} labels (one per row of X), got shape {labels.shape}.")
    if labels.dtype.kind in "US":
        lowered = np.char.lower(labels.astype(str))
        bad = ~np.isin(lowered, DOMAINS)
        if bad.any():
            raise ValueError(f"domain: labels must be 'source' or 'target', got {labels[bad][0]!r}.")
        return (lowered == "target").astype(np.int64)
    if labels.dtype.kind in "biuf":
        bad = ~np.isin(labels, (0, 1))
        if bad.any():
            raise ValueError(f"domain: labels must be 0 (source) or 1 (target), got {labels[bad][0]!r}.")
        return labels.astype(np.int64)
    raise ValueError(f"domain: labels must be 'source'/'target' strings or 0/1, got dtype {labels.dtype}.")


def domain_masks(domain, n_rows: int) -> dict[str, np.ndarray]:
    """{"source": mask, "target": mask}; every row is "source" when domain is None.
    A domain without rows is left out."""
    if domain is None:
        return {"source": np.ones(n_rows, dtype=bool)}
    codes = domain_codes(domain, n_rows)
    masks = {name: codes == code for code, name in enumerate(DOMAINS)}
    return {name: mask for name, mask in masks.items() if mask.any()}
