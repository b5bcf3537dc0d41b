"""What the scikit-learn-style scorers share: input and parameter checks, and the not-fitted error.

scikit-learn's conventions (https://scikit-learn.org/stable/developers/develop.html): __init__
stores the parameters unchanged and fit checks them, so get_params, set_params and clone see
exactly what was given; fit(X, y=None) accepts and ignores y (the domain labels are the keyword
`domain`), so the scorers work in a Pipeline and pass sklearn.utils.estimator_checks. Every error
names the parameter, the argument or the method called.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from asdx._arrays import Prepared, prepare


def check_X(X, estimator, dtype=None, fitting: bool = False) -> Prepared:
    """X (N, D) as a Prepared float32/float64 array; torch tensors (CUDA ones too) pass to `prepare`.

    Host input first goes through sklearn.utils.check_array, which refuses sparse, complex and
    non-numeric data with scikit-learn's messages; `prepare` then checks finiteness (naming the
    first bad index). fit needs at least one row and one feature; score_samples takes zero rows.
    """
    if not isinstance(X, torch.Tensor):
        from sklearn.utils import check_array

        X = check_array(X, accept_sparse=False, dtype=[np.float64, np.float32], ensure_all_finite=False,
                        ensure_min_samples=1 if fitting else 0, estimator=estimator, input_name="X")
    return prepare(X, "X", ndim=2, dtype=dtype, allow_empty=not fitting)


def check_n_features(estimator, x: Prepared) -> None:
    """X must have the width fit saw (scikit-learn's wording, so Pipelines and its checks read it)."""
    if x.shape[1] != estimator.n_features_in_:
        raise ValueError(f"X has {x.shape[1]} features, but {type(estimator).__name__} is expecting "
                         f"{estimator.n_features_in_} features as input (the number it was fitted with).")


def require_fitted(estimator, attribute: str, method: str) -> None:
    """NotFittedError naming the method actually called (e.g. "score_samples(X)") unless fit set `attribute`."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"{type(estimator).__name__}: call fit(X) before {method}.")


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A finite real number (bools excluded: `ridge=True` is not a number of anything)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and bool(np.isfinite(value)))


def check_int(estimator, name: str, minimum: int) -> int:
    value = getattr(estimator, name)
    if not (is_int(value) and value >= minimum):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_bool(estimator, name: str) -> bool:
    value = getattr(estimator, name)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: must be True or False, got {value!r}.")
    return bool(value)


def check_choice(estimator, name: str, choices: tuple) -> None:
    value = getattr(estimator, name)
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in choices):
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}.")
