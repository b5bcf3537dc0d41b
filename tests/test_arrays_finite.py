"""asdx._arrays.prepare's finiteness check (one aminmax pass) against numpy's isfinite, on every kind of input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx._arrays import _all_finite, prepare

BAD = [np.nan, np.inf, -np.inf]


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), bad=st.sampled_from(BAD + [None]),
       dtype=st.sampled_from([np.float32, np.float64]), kind=st.sampled_from(["numpy", "readonly", "torch"]),
       seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-30, 1.0, 1e30]))
def test_all_finite_agrees_with_isfinite(rows, cols, bad, dtype, kind, seed, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * scale).astype(dtype)
    if bad is not None:
        x[rng.integers(rows), rng.integers(cols)] = bad
    expected = bool(np.isfinite(x).all())
    if kind == "readonly":
        x.flags.writeable = False
    data = torch.from_numpy(x) if kind == "torch" else x
    assert _all_finite(data) is expected


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_prepare_names_the_first_bad_index(bad, kind):
    x = np.zeros((5, 7), dtype=np.float32)
    x[3, 2] = bad
    x[4, 6] = np.nan
    with pytest.raises(ValueError, match=r"queries: contains NaN or inf \(first at index \(3, 2\)\)"):
        prepare(torch.from_numpy(x) if kind == "torch" else x, "queries", ndim=2)


def test_a_readonly_array_is_checked_without_a_warning(recwarn):
    x = np.ones((3, 3))
    x.flags.writeable = False
    assert prepare(x, "x", ndim=2).numpy() is not None
    assert not [w for w in recwarn if "writable" in str(w.message)]
