"""Covariance and precision fitting for the Mahalanobis scorers: the one place that inverts a covariance.

The precision is formed in float64 through a Cholesky factor; a singular covariance gets
the smallest ridge that makes it positive definite, with a warning (or a ValueError with
ridge=False), so a scorer never inverts a matrix silently badly.
"""

from __future__ import annotations

import warnings

import numpy as np

from asdx._arrays import prepare

__all__ = ["check_shrinkage", "covariance", "stable_precision"]

_SHRINKAGE = "shrinkage: expected None, 'ledoit-wolf' or a float in [0, 1], got {!r}."


def check_shrinkage(shrinkage) -> None | str | float:
    """The shrinkage setting normalised (None, "ledoit-wolf" or a float in [0, 1]); ValueError naming it."""
    if shrinkage is None:
        return None
    if isinstance(shrinkage, str):
        if shrinkage.lower().replace("_", "-") != "ledoit-wolf":
            raise ValueError(_SHRINKAGE.format(shrinkage))
        return "ledoit-wolf"
    if isinstance(shrinkage, (bool, np.bool_)) or not isinstance(shrinkage, (int, float, np.floating, np.integer)):
        raise ValueError(_SHRINKAGE.format(shrinkage))
    alpha = float(shrinkage)
    if not 0.0 <= alpha <= 1.0:  # NaN fails too
        raise ValueError(f"shrinkage: must be in [0, 1], got {alpha}.")
    return alpha


def covariance(samples, shrinkage: None | str | float = None) -> np.ndarray:
    """Covariance (D, D) float64 of samples (N, D), N >= 2.

    shrinkage:
      - None: the unbiased sample covariance (ddof = 1);
      - "ledoit-wolf": `sklearn.covariance.LedoitWolf` (its shrinkage toward a scaled
        identity is chosen from the data, useful when N is small against D, e.g. the
        10 target clips of a DCASE machine);
      - a float a in [0, 1]: (1 − a) S + a (tr S / D) I, as `sklearn.covariance.shrunk_covariance`.
    """
    x = prepare(samples, "samples", ndim=2, dtype=np.float64, allow_empty=False).numpy()
    if x.shape[0] < 2:
        raise ValueError(f"samples: need at least 2 rows to estimate a covariance, got {x.shape[0]}.")
    alpha = check_shrinkage(shrinkage)
    if alpha is None:
        return np.atleast_2d(np.cov(x, rowvar=False))
    if alpha == "ledoit-wolf":
        from sklearn.covariance import LedoitWolf

        return np.asarray(LedoitWolf().fit(x).covariance_, dtype=np.float64)
    from sklearn.covariance import shrunk_covariance

    return np.asarray(shrunk_covariance(np.atleast_2d(np.cov(x, rowvar=False)), alpha), dtype=np.float64)


def _upper_cholesky(cov: np.ndarray) -> np.ndarray:
    """U upper triangular with cov = U Uᵀ (Cholesky of the order-reversed matrix)."""
    lower_of_reversed = np.linalg.cholesky(cov[::-1, ::-1])
    return lower_of_reversed[::-1, ::-1]


def check_square_symmetric(m: np.ndarray, name: str) -> None:
    """ValueError naming `name` unless m is a non-empty square matrix, symmetric to 1e-8 of its largest entry."""
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty square matrix, got shape {m.shape}.")
    scale = max(float(np.abs(m).max()), np.finfo(np.float64).tiny)
    asymmetry = float(np.abs(m - m.T).max())
    if asymmetry > 1e-8 * scale:
        raise ValueError(f"{name}: is not symmetric (max |M - Mᵀ| = {asymmetry:.3g}, max |M| = {scale:.3g}).")


def stable_precision(cov, ridge: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Precision P = cov⁻¹ and its lower-triangular factor L (P = L Lᵀ), both float64 (D, D).

    Computed without forming an explicit inverse of cov: cov = U Uᵀ (U upper
    triangular, a Cholesky factorisation of the order-reversed matrix), so
    L = U⁻ᵀ is lower triangular and needs one triangular inverse.

    When cov is not positive definite (singular, e.g. fewer samples than dims, or
    slightly indefinite from rounding):
      - ridge=True: adds r I with the smallest r of the form max(0, −λ_min) + 2^m δ
        (δ = 1e-10 λ_max, m = 0, 1, ...) for which the Cholesky factorisation succeeds,
        and warns with the value of r. δ keeps the condition number near 1e10 or below,
        so the precision keeps about six significant digits; a ridge that only just
        lets Cholesky pass (condition ~1/eps) would give an inverse that is mostly noise;
      - ridge=False: raises ValueError.
    """
    if not isinstance(ridge, (bool, np.bool_)):
        raise ValueError(f"ridge: must be True or False, got {ridge!r}.")
    c = prepare(cov, "cov", ndim=2, dtype=np.float64).numpy()
    check_square_symmetric(c, "cov")
    c = 0.5 * (c + c.T)
    try:
        upper = _upper_cholesky(c)
        ridge_added = 0.0
    except np.linalg.LinAlgError:
        eigenvalues = np.linalg.eigvalsh(c)
        smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
        if not ridge:
            raise ValueError(
                f"cov: is not positive definite (smallest eigenvalue {smallest:.3g}, largest {largest:.3g}); "
                "use ridge=True or a shrinkage covariance."
            ) from None
        if largest <= 0.0:
            raise ValueError(f"cov: has no positive variance (largest eigenvalue {largest:.3g}); cannot regularise.")
        step = 1e-10 * largest
        base = max(0.0, -smallest)
        identity = np.eye(c.shape[0])
        for doubling in range(200):
            ridge_added = base + step * 2.0**doubling
            try:
                upper = _upper_cholesky(c + ridge_added * identity)
                break
            except np.linalg.LinAlgError:
                continue
        warnings.warn(
            f"cov is not positive definite (smallest eigenvalue {smallest:.3g}); added a ridge of "
            f"{ridge_added:.6g} to the diagonal ({ridge_added / largest:.3g} of the largest eigenvalue).",
            UserWarning,
            stacklevel=2,
        )
    identity = np.eye(c.shape[0])
    upper_inverse = np.linalg.solve(upper, identity) if c.shape[0] > 0 else identity
    factor = np.tril(upper_inverse.T)
    precision = factor @ factor.T
    return precision, factor
