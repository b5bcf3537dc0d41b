"""NumPy reference of the beam back-end: RDP pooling, the BEAM band-wise memory, VarMin rescaling (test oracle).

Direct loops over the formulas of docs/systems/beam.md, in float64: relative deviation pooling
over time per frequency band, the band score min_i D(x_f, y_i,f) with D = ½(1 − cos), the VarMin
density b[i, f] and slope α_f, and leave-one-out train scores that rebuild the memory without the
clip (its densities included). Slow on purpose: asdx.scoring.BandMemoryScorer is checked against it.
"""

from __future__ import annotations

import numpy as np

RDP_EPS = 1e-8  # d̂ = 0 when max_t d is at most this (a band that does not change over time)
NORM_EPS = 1e-12  # a vector shorter than this counts as zero: its cosine with anything is 0, D = ½
VAR_EPS = 1e-12  # α_f = 0 when Var(b) is at most this


def rdp_pool(tokens, gamma: float = 4.0) -> np.ndarray:
    """(clips, time, bands, dim) -> (clips, bands, dim): Σ_t w[t, f] x[t, f] with w ∝ (1 + d̂)^γ.

    μ_f = mean_t x[t, f]; d = ‖x[t, f] − μ_f‖; d̂ = d / max_t d (0 when max_t d ≤ 1e-8);
    a = (1 + d̂)^γ; w = a / Σ_t a. γ = 0 gives the plain mean over time.
    """
    x = np.asarray(tokens, dtype=np.float64)
    out = np.zeros((x.shape[0], x.shape[2], x.shape[3]))
    for n in range(x.shape[0]):
        for f in range(x.shape[2]):
            band = x[n, :, f]  # (time, dim)
            d = np.linalg.norm(band - band.mean(axis=0), axis=1)
            top = d.max()
            d_hat = d / top if top > RDP_EPS else np.zeros_like(d)
            a = (1.0 + d_hat) ** gamma
            out[n, f] = (a / a.sum()) @ band
    return out


def cosine_distance(x, y) -> float:
    """D(x, y) = ½ (1 − cos(x, y)); a (near-)zero vector has cosine 0 with everything."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    cos = 0.0 if nx <= NORM_EPS or ny <= NORM_EPS else float(x @ y) / (nx * ny)
    return 0.5 * (1.0 - cos)


def band_distances(queries, memory) -> np.ndarray:
    """(Q, F, D) queries, (R, F, D) memory -> (Q, R, F) band distances D(x_f, y_i,f)."""
    q, m = np.asarray(queries, dtype=np.float64), np.asarray(memory, dtype=np.float64)
    out = np.zeros((q.shape[0], m.shape[0], q.shape[1]))
    for a in range(q.shape[0]):
        for i in range(m.shape[0]):
            for f in range(q.shape[1]):
                out[a, i, f] = cosine_distance(q[a, f], m[i, f])
    return out


def densities(memory, k: int = 4) -> np.ndarray:
    """(R, F): b[i, f] = mean distance from reference i to its k nearest *other* references in band f.

    Fewer than k + 1 references: the mean over all R − 1 others; a lone reference (R = 1): 0.
    """
    d = band_distances(memory, memory)
    r = d.shape[0]
    b = np.zeros((r, d.shape[2]))
    for i in range(r):
        others = np.delete(d[i], i, axis=0)  # (R - 1, F)
        if len(others):
            b[i] = np.sort(others, axis=0)[:k].mean(axis=0)
    return b


def varmin_alpha(memory, density) -> np.ndarray:
    """(F,) α_f = Cov(d, b) / Var(b) over the train clips (the memory itself), 0 when Var(b) ≤ 1e-12.

    d[j] = min_{i ≠ j} D(y_j,f, y_i,f) (leave-one-out), b[j] = density[i*, f] of the i* it matched (the first
    on ties). Population (co)variances; needs R ≥ 2.
    """
    d = band_distances(memory, memory)
    r, bands = d.shape[0], d.shape[2]
    alpha = np.zeros(bands)
    for f in range(bands):
        nearest, matched = np.zeros(r), np.zeros(r)
        for j in range(r):
            row = d[j, :, f].copy()
            row[j] = np.inf
            i = int(np.argmin(row))
            nearest[j], matched[j] = row[i], density[i, f]
        var = matched.var()
        alpha[f] = 0.0 if var <= VAR_EPS else float(np.mean((nearest - nearest.mean()) * (matched - matched.mean()))
                                                     / var)
    return alpha


def band_scores(queries, memory, density=None, alpha=None) -> np.ndarray:
    """(Q, F): min_i (D(x_f, y_i,f) − α_f b[i, f]); without density/alpha the raw BEAM band score min_i D."""
    d = band_distances(queries, memory)
    if density is not None and alpha is not None:
        d = d - np.asarray(alpha)[None, None, :] * np.asarray(density)[None, :, :]
    return d.min(axis=1)


def fit(memory, k: int = 4, varmin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(density (R, F), alpha (F,)) of a memory; alpha is 0 without VarMin."""
    b = densities(memory, k)
    return b, varmin_alpha(memory, b) if varmin else np.zeros(b.shape[1])


def leave_one_out_band_scores(memory, k: int = 4, varmin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(raw, rescaled), each (R, F): clip j scored against the memory without j.

    α is the one fitted on the whole memory; the densities are those of the memory without j (each
    other reference's k nearest others, j excluded), which is what score_samples would use had j not
    been a train clip.
    """
    m = np.asarray(memory, dtype=np.float64)
    r = m.shape[0]
    if r < 2:
        raise ValueError("memory: leave-one-out needs at least 2 references.")
    _, alpha = fit(m, k, varmin)
    raw, rescaled = np.zeros((r, m.shape[1])), np.zeros((r, m.shape[1]))
    for j in range(r):
        rest = np.delete(m, j, axis=0)
        raw[j] = band_scores(m[j:j + 1], rest)[0]
        rescaled[j] = band_scores(m[j:j + 1], rest, densities(rest, k), alpha)[0]
    return raw, rescaled


__all__ = ["band_distances", "band_scores", "cosine_distance", "densities", "fit", "leave_one_out_band_scores",
           "rdp_pool", "varmin_alpha"]
