"""Gamma MLE, quantile and special functions against SciPy and the golden fixtures."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.special as special
import scipy.stats as stats
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asdx.reference.gamma as ref
from asdx.scoring import gamma as G
from asdx.scoring import special as S
from asdx.scoring import threshold as T
from conftest import fixture_path, requires_cuda

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPES = st.floats(-3.0, 5.0).map(lambda e: 10.0 ** e)  # 1e-3 ... 1e5


def _fixture_sets():
    data = np.load(fixture_path("gamma.npz"))
    names = sorted({key.split("/")[0] for key in data.files})
    return data, names


def _relative(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


# ----------------------------------------------------------------------------- fixtures

def _scipy_is_interior(x, shape, loc) -> bool:
    """scipy's fit is an interior point (not the boundary spike at loc = min(x), shape < 1)."""
    return shape > 1.0 and x.min() - loc > 1e-6 * (x.max() - x.min())


def test_fixture_free_fit_matches_scipy_where_interior_and_is_never_the_boundary():
    # scipy's Nelder-Mead is interior on ae_like, lognormalish, negative_scores, shape2 and
    # shape9_loc; on shape0.8 and small_n it ends at the boundary spike (loc = min, shape < 1).
    data, names = _fixture_sets()
    interior_names = []
    for name in names:
        x = data[f"{name}/x"]
        shape, loc, _ = data[f"{name}/fit3"]
        fit = G.fit_gamma(x)
        assert fit.status == 0, name
        np.testing.assert_allclose(fit.loglik, ref.gamma_loglik(x, fit.shape, fit.loc, fit.scale), rtol=1e-9)
        assert x.min() - fit.loc > 1e-6 * np.ptp(x), name  # never the spike
        if _scipy_is_interior(x, shape, loc):
            interior_names.append(name)
            assert fit.method == "mle", name
            np.testing.assert_allclose(fit.ppf(0.9), data[f"{name}/thr3_q90"], rtol=1e-4, err_msg=name)
            assert fit.loglik >= float(data[f"{name}/loglik3"]) - 1e-6 * abs(float(data[f"{name}/loglik3"]))
        else:
            assert fit.method == "mps", name
    assert sorted(interior_names) == ["ae_like", "lognormalish", "negative_scores", "shape2", "shape9_loc"]


def test_fixture_fixed_loc_fit():
    data, names = _fixture_sets()
    for name in names:
        x = data[f"{name}/x"]
        expected = data[f"{name}/fit2"]
        if np.isnan(expected[0]):  # scores <= 0: no fit with floc=0
            with pytest.raises(ValueError, match="scores"):
                G.fit_gamma(x, loc=0.0)
            assert int(G.fit_gamma_batch([x], loc=0.0).status[0]) == 4
            continue
        fit = G.fit_gamma(x, loc=0.0)
        scipy_ll = ref.gamma_loglik(x, *expected)
        assert fit.loc == 0.0
        assert fit.loglik >= scipy_ll - 1e-6 * abs(scipy_ll), name
        np.testing.assert_allclose([fit.shape, fit.scale], expected[[0, 2]], rtol=1e-6)
        np.testing.assert_allclose(fit.ppf(0.9), ref.gamma_ppf(0.9, fit.shape, 0.0, fit.scale), rtol=1e-6)
        np.testing.assert_allclose(fit.ppf(0.9), data[f"{name}/thr2_q90"], rtol=1e-6)


def test_fixture_batch_equals_single():
    data, names = _fixture_sets()
    sets = [data[f"{name}/x"] for name in names]
    batch = G.fit_gamma_batch(sets)
    for i, x in enumerate(sets):
        single = G.fit_gamma(x)
        assert batch[i] == single


# ----------------------------------------------------------------------------- special functions

@SETTINGS
@given(st.lists(st.floats(-3.0, 5.0), min_size=1, max_size=50))
def test_digamma_trigamma(exponents):
    x = 10.0 ** np.array(exponents)
    np.testing.assert_allclose(S.digamma(x), ref.digamma(x), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(S.trigamma(x), ref.trigamma(x), rtol=1e-12)


def test_digamma_trigamma_domain():
    assert np.isnan(S.digamma(0.0)) and np.isnan(S.digamma(-1.5)) and np.isnan(S.trigamma(-2.0))
    assert S.digamma(np.inf) == np.inf and S.trigamma(np.inf) == 0.0
    np.testing.assert_allclose(S.digamma(1e-300), special.digamma(1e-300), rtol=1e-14)


@SETTINGS
@given(SHAPES, st.lists(st.floats(-12.0, 12.0), min_size=1, max_size=30))
def test_incomplete_gamma(a, offsets):
    # x around the bulk (a +- k sqrt(a)) and far into both tails (factors e^+-12).
    spread = np.array(offsets)
    x = np.concatenate([a * np.exp(spread), np.maximum(a + spread * math.sqrt(a), 0.0)])
    p, q = S.gammainc(a, x), S.gammaincc(a, x)
    expected_p, expected_q = ref.gammainc(a, x), ref.gammaincc(a, x)
    # Relative accuracy wherever the value is representable; tails down to 1e-280.
    for ours, theirs in ((p, expected_p), (q, expected_q)):
        keep = theirs > 1e-280
        np.testing.assert_allclose(ours[keep], theirs[keep], rtol=5e-9, atol=0)
        assert np.all(ours[~keep] < 1e-270)
    np.testing.assert_allclose(p + q, 1.0, rtol=1e-14)


@SETTINGS
@given(SHAPES, st.lists(st.floats(1e-12, 1.0 - 1e-12), min_size=1, max_size=30))
def test_incomplete_gamma_inverse(a, probabilities):
    p = np.array(probabilities)
    # Subnormal quantiles (tiny a) carry only a few significant bits: compare those absolutely.
    tiny = np.finfo(np.float64).tiny
    x = S.gammaincinv(a, p)
    np.testing.assert_allclose(x, ref.gammaincinv(a, p), rtol=1e-9, atol=tiny)
    xc = S.gammainccinv(a, p)
    np.testing.assert_allclose(xc, ref.gammainccinv(a, p), rtol=1e-9, atol=tiny)
    # Round trip through our own P and Q where x is a normal double (for a = 1e-3 the
    # lower quantiles underflow to 0, as scipy's do).
    np.testing.assert_allclose(S.gammainc(a, x[x > 1e-300]), p[x > 1e-300], rtol=1e-10)
    np.testing.assert_allclose(S.gammaincc(a, xc[xc > 1e-300]), p[xc > 1e-300], rtol=1e-10)
    assert np.all(ref.gammaincinv(a, p[x == 0]) == 0) and np.all(ref.gammainccinv(a, p[xc == 0]) == 0)


def test_incomplete_gamma_edges():
    assert S.gammainc(2.0, 0.0) == 0.0 and S.gammaincc(2.0, 0.0) == 1.0
    assert S.gammainc(2.0, np.inf) == 1.0
    assert np.isnan(S.gammainc(0.0, 1.0)) and np.isnan(S.gammainc(1.0, -1.0)) and np.isnan(S.gammainc(np.nan, 1.0))
    assert S.gammaincinv(3.0, 0.0) == 0.0 and S.gammaincinv(3.0, 1.0) == np.inf
    assert np.isnan(S.gammaincinv(3.0, 1.5)) and np.isnan(S.gammaincinv(-1.0, 0.5))


def test_incomplete_gamma_large_shape_against_mpmath():
    # Above a = 1e5 the kernel uses Temme's uniform expansion; scipy itself loses
    # accuracy there (errors ~1e-5 at a ~ 1e6), so the oracle is mpmath's series.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    for a in (1.5e5, 1.0e6):
        for k in (-6.0, -1.0, 0.0, 0.5, 3.0):
            x = a + k * math.sqrt(a)
            series = mpmath.exp(a * mpmath.log(x) - x - mpmath.loggamma(a + 1)) * mpmath.hyp1f1(
                1, a + 1, x, maxterms=10**7)
            np.testing.assert_allclose(S.gammainc(a, x), float(series), rtol=1e-10)
            np.testing.assert_allclose(S.gammaincc(a, x), float(1 - series), rtol=1e-9)


def test_incomplete_gamma_continuous_at_the_temme_switch():
    a = 1e5
    x = a + np.linspace(-30, 30, 101) * math.sqrt(a)
    below, above = S.gammainc(a * (1 - 1e-15), x), S.gammainc(a * (1 + 1e-15), x)
    np.testing.assert_allclose(below, above, rtol=1e-9)


@SETTINGS
@given(SHAPES, st.floats(-100.0, 100.0), st.floats(-3.0, 3.0).map(lambda e: 10.0 ** e),
       st.lists(st.floats(-6.0, 3.0), min_size=1, max_size=20))
def test_logpdf(a, loc, scale, exponents):
    x = loc + scale * a * 10.0 ** np.array(exponents)
    np.testing.assert_allclose(S.gamma_logpdf(x, a, loc, scale), ref.gamma_logpdf(x, a, loc, scale),
                               rtol=1e-9, atol=1e-9 * (1 + a))


def test_logpdf_support():
    assert S.gamma_logpdf(-1.0, 2.0) == -np.inf
    assert S.gamma_logpdf(0.0, 0.5) == np.inf and S.gamma_logpdf(0.0, 3.0) == -np.inf
    np.testing.assert_allclose(S.gamma_logpdf(0.0, 1.0, 0.0, 2.0), -math.log(2.0))


@SETTINGS
@given(SHAPES, st.floats(-1e3, 1e3), st.floats(-3.0, 3.0).map(lambda e: 10.0 ** e),
       st.lists(st.floats(1e-9, 1.0 - 1e-9), min_size=1, max_size=20))
def test_ppf(a, loc, scale, qs):
    q = np.array(qs)
    expected = ref.gamma_ppf(q, a, loc, scale)
    np.testing.assert_allclose(G.gamma_ppf(q, a, loc, scale), expected, rtol=1e-8,
                               atol=1e-12 * (abs(loc) + scale * a))


def test_ppf_broadcasting_and_errors():
    out = G.gamma_ppf(np.array([[0.1], [0.9]]), np.array([0.5, 2.0, 50.0]), 1.0, 2.0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, ref.gamma_ppf(np.array([[0.1], [0.9]]), np.array([0.5, 2.0, 50.0]), 1.0, 2.0),
                               rtol=1e-10)
    assert isinstance(G.gamma_ppf(0.9, 2.0, 0.0, 1.0), float)
    assert G.gamma_ppf(0.0, 2.0, 3.0, 1.0) == 3.0 and G.gamma_ppf(1.0, 2.0, 3.0, 1.0) == np.inf
    with pytest.raises(ValueError, match="q"):
        G.gamma_ppf(1.5, 2.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        G.gamma_ppf(0.5, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="scale"):
        G.gamma_ppf(0.5, 1.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="loc"):
        G.gamma_ppf(0.5, 1.0, np.nan, 1.0)
    with pytest.raises(ValueError, match="broadcast"):
        G.gamma_ppf(np.ones(2) * 0.5, np.ones(3), 0.0, 1.0)


# ----------------------------------------------------------------------------- the fit

def _spread(x) -> float:
    return float(np.max(x) - np.min(x))


def _assert_not_the_spike(x, fit, label="") -> None:
    """The fit is not the likelihood's boundary spike (loc at min(x) with shape < 1): a maximum-
    likelihood fit has loc below the minimum by a margin and shape > 1; the spacings fit, bounded
    where the likelihood is not, may put loc as close to the minimum as the data say (gamma(0.3)
    draws come within 1e-7 (max - min) of their true loc), but below it."""
    assert fit.ok, label
    if fit.method == "mle":
        assert x.min() - fit.loc > 1e-6 * _spread(x) and fit.shape > 1.0, label
    else:
        assert fit.method == "mps" and fit.loc < x.min(), label


@settings(max_examples=25, deadline=None)
@given(st.floats(0.3, 200.0), st.floats(-1e3, 1e3), st.floats(-3.0, 3.0).map(lambda e: 10.0 ** e),
       st.integers(5, 400), st.integers(0, 2**31 - 1))
def test_free_fit_is_an_interior_maximum_or_the_spacings_fit(shape, loc, scale, n, seed):
    x = loc + scale * np.random.default_rng(seed).gamma(shape, size=n)
    if x.max() == x.min():
        return
    spread = _spread(x)
    mle = G.fit_gamma(x, method="mle")
    if mle.ok:
        # An interior local maximum of the profile likelihood: shape > 1, loc well below the
        # minimum, and the profile no higher at gaps 1 % either side (above the search's top,
        # a gap of 1e4 (max - min), the profile still rises slowly towards the normal limit).
        assert mle.method == "mle" and mle.shape > 1.0
        gap = x.min() - mle.loc
        assert gap > 1e-6 * spread
        if mle.shape < 1e5:  # where scipy's logpdf is accurate enough to check ours
            np.testing.assert_allclose(mle.loglik, ref.gamma_loglik(x, mle.shape, mle.loc, mle.scale), rtol=1e-9)
        tolerance = 1e-9 * max(1.0, abs(mle.loglik))
        neighbours = [0.99 * gap] + ([1.01 * gap] if gap < 0.99e4 * spread else [])
        assert np.all(ref.profile(x, neighbours)[2] <= ref.profile(x, gap)[2][0] + tolerance)
    else:
        assert mle.status == 5 and math.isnan(mle.shape) and mle.method == "none"
        assert ref.interior_mle(x) is None  # the reference's dense search finds none either
    auto = G.fit_gamma(x)
    _assert_not_the_spike(x, auto)
    assert auto.method == ("mle" if mle.ok and n >= G.MIN_MLE_SCORES else "mps")
    if auto.method == "mle":
        assert auto == mle


@settings(max_examples=25, deadline=None)
@given(st.floats(0.2, 500.0), st.floats(-3.0, 3.0).map(lambda e: 10.0 ** e), st.integers(3, 300),
       st.integers(0, 2**31 - 1))
def test_fixed_loc_fit_matches_scipy(shape, scale, n, seed):
    x = scale * np.random.default_rng(seed).gamma(shape, size=n) + 1e-300
    if x.max() == x.min():
        return
    fit = G.fit_gamma(x, loc=0.0)
    expected = ref.fit_gamma(x, loc=0.0)
    np.testing.assert_allclose([fit.shape, fit.scale], [expected[0], expected[2]], rtol=1e-7)


# Score sets of the kinds asdx fits (issue 19): gamma of several shapes, uniform, normal,
# heavy-tailed, z-scored (negative) ones; each is drawn at the sizes below, tiny ones included.
FAMILIES = {
    "gamma 0.5": lambda rng, n: rng.gamma(0.5, size=n),
    "gamma 2": lambda rng, n: 3.0 + rng.gamma(2.0, size=n),
    "gamma 20": lambda rng, n: rng.gamma(20.0, 0.1, size=n),
    "uniform": lambda rng, n: rng.uniform(1.0, 2.0, size=n),
    "normal": lambda rng, n: rng.normal(size=n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, size=n),
    "pareto": lambda rng, n: rng.pareto(2.5, size=n),
    "z-scored": lambda rng, n: stats.zscore(rng.gamma(3.0, size=n)),
}
FAMILY_SIZES = (3, 5, 8, 10, 46, 120)


def _thresholds_agree(ours: float, theirs: float, x, rtol: float) -> bool:
    return abs(ours - theirs) <= rtol * max(abs(theirs), _spread(x))


def _assert_fit_matches_reference(x, method: str, label: str) -> None:
    fit = G.fit_gamma(x, method=method)
    shape, loc, scale, expected_method = ref.fit_gamma_asdx(x, method=method)
    assert fit.method == expected_method, label
    if fit.method == "none":
        return
    expected = ref.gamma_ppf(0.9, shape, loc, scale)
    if fit.method == "mle":  # at the normal limit (shape ~1e9) the reference's shape is good to ~1e-5
        assert _thresholds_agree(fit.ppf(0.9), expected, x, 1e-5), label
    elif not _thresholds_agree(fit.ppf(0.9), expected, x, 1e-4):
        # the spacings objective can be flat (tiny or near-symmetric sets): then ours is as high
        ours, theirs = ref.log_spacings(x, fit.shape, fit.loc, fit.scale), ref.log_spacings(x, shape, loc, scale)
        assert ours >= theirs - 1e-7 * max(1.0, abs(theirs)), label


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_free_fit_against_scipy_and_the_reference(family):
    rng = np.random.default_rng(sorted(FAMILIES).index(family))
    for n in FAMILY_SIZES:
        x = FAMILIES[family](rng, n)
        label = f"{family}, n = {n}"
        auto, mle = G.fit_gamma(x), G.fit_gamma(x, method="mle")
        _assert_not_the_spike(x, auto, label)
        if mle.ok:
            _assert_not_the_spike(x, mle, label)
        # Where scipy's answer is interior, it is our interior maximum (scipy's Nelder-Mead may
        # stop short: then ours is more likely). Where it is not, ours is not the spike it found.
        shape, loc, scale = ref.fit_gamma(x)
        if _scipy_is_interior(x, shape, loc) and ref.interior_mle(x) is not None:
            assert mle.ok, label
            if not _thresholds_agree(mle.ppf(0.9), ref.gamma_ppf(0.9, shape, loc, scale), x, 1e-3):
                assert mle.loglik > ref.gamma_loglik(x, shape, loc, scale), label
            if n >= G.MIN_MLE_SCORES:
                assert auto == mle, label
        # The kernel and the NumPy reference run the same procedure.
        _assert_fit_matches_reference(x, "mle", label)
        _assert_fit_matches_reference(x, "auto", label)


def _j_shaped_sets(n: int):
    """Score sets whose likelihood rises to the boundary spike: gamma(shape < 1) draws, gamma(0.4) with
    noise, and many near-equal low scores with a long tail (as rank- or distance-based scores are)."""
    rng = np.random.default_rng(n)
    for seed in range(3):
        yield f"gamma 0.3, {seed}", rng.gamma(0.3, size=n)
        yield f"gamma 0.8, {seed}", 2.0 + rng.gamma(0.8, 0.5, size=n)
        yield f"gamma 0.4 + noise, {seed}", rng.gamma(0.4, size=n) + rng.normal(0.0, 0.05, n) + 0.2
        low = rng.normal(1.0, 1e-3, size=n)
        yield f"cluster + tail, {seed}", np.where(rng.random(n) < 0.6, low, low + rng.exponential(2.0, n))


@pytest.mark.parametrize("n", [10, 46, 120])
def test_j_shaped_sets_never_get_the_boundary_spike(n):
    methods = []
    for label, x in _j_shaped_sets(n):
        fit = G.fit_gamma(x)
        _assert_not_the_spike(x, fit, label)
        methods.append(fit.method)
        # The spike is there: at loc = the largest double below min(x) the shape falls below 1.
        spike = G.fit_gamma(x, loc=float(np.nextafter(x.min(), -np.inf)))
        assert spike.shape < 1.0, label
        # The batch and GammaThreshold give the same fit.
        assert G.fit_gamma_batch([x])[0] == fit, label
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", G.GammaFitWarning)
            threshold = T.GammaThreshold().fit(x)
        assert threshold.method_ == fit.method and threshold.threshold_ == fit.ppf(0.9), label
    assert "mps" in methods  # these sets do exercise the fallback


def test_issue_19_set_where_scipy_is_interior_and_the_spike_more_likely():
    # Issue 19's sera/fan pattern on 46 J-shaped scores: scipy's fit is interior (shape ~1.37),
    # while the boundary spike has a higher likelihood at shape ~0.54, so the old rule ("the more
    # likely of the spike and the interior maximum") returned the spike and a threshold ~24 % higher.
    rng = np.random.default_rng(72)
    x = rng.gamma(0.4, size=46) + rng.normal(0.0, 0.05, 46) + 0.2
    shape, loc, scale = ref.fit_gamma(x)
    assert 1.3 < shape < 1.45 and _scipy_is_interior(x, shape, loc)
    fit = G.fit_gamma(x)
    assert fit.method == "mle"
    np.testing.assert_allclose(fit.ppf(0.9), ref.gamma_ppf(0.9, shape, loc, scale), rtol=1e-4)
    spike = G.fit_gamma(x, loc=float(np.nextafter(x.min(), -np.inf)))
    assert spike.shape < 0.6 and spike.loglik > fit.loglik
    assert spike.ppf(0.9) > 1.2 * fit.ppf(0.9)


def test_method_argument():
    x = np.random.default_rng(9).gamma(5.0, size=100)
    assert G.fit_gamma(x, method="mps").method == "mps"
    assert G.fit_gamma(x, loc=0.0).method == "mle"
    with pytest.raises(ValueError, match="method"):
        G.fit_gamma(x, method="scipy")
    with pytest.raises(ValueError, match="method"):
        G.fit_gamma_batch([x], loc=0.0, method="mps")
    # fewer than 3 distinct scores: no spacings fit (status 5), however many scores
    two_valued = G.fit_gamma(np.array([1.0, 1.0, 1.0, 2.0, 2.0]))
    assert two_valued.status == 5 and two_valued.method == "none" and math.isnan(two_valued.ppf(0.9))
    # a tie group takes the spacing below it as often as it has members: the objective stays finite
    tied = np.concatenate([np.full(10, 1.0), np.random.default_rng(10).gamma(0.5, size=30) + 1.0])
    fit = G.fit_gamma(tied)
    _assert_not_the_spike(tied, fit)
    assert math.isfinite(ref.log_spacings(tied, fit.shape, fit.loc, fit.scale))
    assert ref.MIN_MLE_SCORES == G.MIN_MLE_SCORES


def test_batch_shapes_and_kinds():
    rng = np.random.default_rng(3)
    ragged = [rng.gamma(2.0, size=n) + 5 for n in (3, 10, 257, 1000)]
    batch = G.fit_gamma_batch(ragged)
    assert len(batch) == 4 and batch.status.dtype == np.int32 and batch.method.dtype == np.int8
    for i, x in enumerate(ragged):
        assert batch[i] == G.fit_gamma(x)
    square = rng.gamma(3.0, size=(6, 50))
    from_array = G.fit_gamma_batch(square, loc=0.0)
    from_tensor = G.fit_gamma_batch(torch.from_numpy(square), loc=0.0)
    assert isinstance(from_tensor.shape, torch.Tensor) and isinstance(from_tensor.method, torch.Tensor)
    np.testing.assert_array_equal(from_array.shape, from_tensor.shape.numpy())
    np.testing.assert_array_equal(from_array.method, from_tensor.method.numpy())
    for i in range(6):
        assert from_array[i] == G.fit_gamma(square[i], loc=0.0)
    assert len(G.fit_gamma_batch([])) == 0
    assert len(G.fit_gamma_batch(np.zeros((0, 5)))) == 0


@pytest.mark.parametrize("big_at", ["first", "middle", "last"])
def test_ragged_batch_is_split_by_work_with_identical_results(big_at):
    # One big set among many small ones: the CPU kernel splits the sets into contiguous runs of about
    # equal total length (not equal counts); every set must still be fitted exactly once, as alone.
    # About half of the small sets have no interior likelihood maximum and get the spacings fit.
    import asdx

    if asdx.get_kernels() == "torch":
        pytest.skip("pins how the native CPU kernel splits sets over threads (bit-identical for any count); the "
                    "torch implementation's sums follow torch's reduction order, and 501 sets take it minutes")
    rng = np.random.default_rng(21)
    small = [rng.gamma(2.0, 1.0, 20) + 3.0 for _ in range(500)]
    big = rng.gamma(3.0, 2.0, 100_000) - 1.0
    where = {"first": 0, "middle": 250, "last": 500}[big_at]
    sets = small[:where] + [big] + small[where:]
    before = asdx.get_num_threads()
    results = {}
    try:
        for threads in (1, 4, 3, 2):
            asdx.set_num_threads(threads)
            results[threads] = G.fit_gamma_batch(sets)  # all kept alive: no output buffer is reused
    finally:
        asdx.set_num_threads(before)
    serial = results[1]
    assert np.all(serial.status == 0) and set(serial.method.tolist()) == {1, 2}  # mle and mps
    for threads, batch in results.items():
        for name in ("shape", "loc", "scale", "loglik", "status", "method"):
            np.testing.assert_array_equal(getattr(batch, name), getattr(serial, name),
                                          err_msg=f"{name} with {threads} threads")
    assert serial[where] == G.fit_gamma(big)
    for i in (0, 1, 249, 250, 251, 499, 500):
        assert serial[i] == G.fit_gamma(sets[i])


def test_batch_statuses_do_not_fail_the_batch():
    good = np.random.default_rng(0).gamma(2.0, size=100)
    sets = [good, np.array([1.0, 2.0]), np.full(10, 3.0), np.array([1.0, np.nan, 2.0, 3.0]),
            np.array([1.0, np.inf, 2.0]), np.array([]), good - 10.0]
    free = G.fit_gamma_batch(sets)
    np.testing.assert_array_equal(free.status, [0, 1, 2, 3, 3, 1, 0])
    assert np.all(np.isnan(free.shape[1:6])) and np.all(np.isnan(free.loc[1:6]))
    assert [free[i].method for i in range(1, 6)] == ["none"] * 5 and free[0].method in ("mle", "mps")
    fixed = G.fit_gamma_batch(sets, loc=0.0)
    np.testing.assert_array_equal(fixed.status, [0, 1, 2, 3, 3, 1, 4])
    assert G.STATUS[4].startswith("scores at or below")


def test_single_fit_edge_cases():
    with pytest.raises(ValueError, match="scores"):
        G.fit_gamma([1.0, np.nan, 3.0])
    with pytest.raises(ValueError, match="scores"):
        G.fit_gamma([])
    with pytest.raises(ValueError, match="scores"):
        G.fit_gamma(np.ones((3, 3)))
    with pytest.raises(ValueError, match="loc"):
        G.fit_gamma([1.0, 2.0, 3.0], loc=np.nan)
    assert G.fit_gamma([1.0, 2.0]).status == 1
    constant = G.fit_gamma(np.full(50, 7.0))
    assert constant.status == 2 and math.isnan(constant.shape) and math.isnan(constant.ppf(0.9))
    # Negative scores are fine with a free location: a shifted set gives a shifted fit.
    x = np.random.default_rng(1).gamma(2.0, size=300)
    shifted = G.fit_gamma(x - 100.0)
    base = G.fit_gamma(x)
    np.testing.assert_allclose(shifted.loc, base.loc - 100.0, rtol=1e-6)
    np.testing.assert_allclose([shifted.shape, shifted.scale], [base.shape, base.scale], rtol=1e-5)


def test_fit_is_scale_and_offset_equivariant_at_huge_magnitudes():
    x = np.random.default_rng(2).gamma(4.0, size=500)
    base = G.fit_gamma(x)
    big = G.fit_gamma(1e8 * x + 1e12)
    np.testing.assert_allclose(big.shape, base.shape, rtol=1e-4)
    np.testing.assert_allclose(big.ppf(0.9), 1e8 * base.ppf(0.9) + 1e12, rtol=1e-9)
    tiny = G.fit_gamma(1e-200 * x)
    np.testing.assert_allclose(tiny.shape, base.shape, rtol=1e-6)


def test_symmetric_scores_reach_the_normal_limit():
    x = np.random.default_rng(4).normal(size=400)
    x = np.concatenate([x, -x])  # skewness exactly 0: the gamma tends to a normal
    fit = G.fit_gamma(x)
    assert fit.status == 0 and fit.shape > 1e6
    normal_ll = stats.norm.logpdf(x, x.mean(), x.std()).sum()
    np.testing.assert_allclose(fit.loglik, normal_ll, rtol=1e-6)
    np.testing.assert_allclose(fit.ppf(0.9), stats.norm.ppf(0.9, x.mean(), x.std()), rtol=1e-4)


# ----------------------------------------------------------------------------- CUDA

@requires_cuda
def test_cuda_fit_matches_cpu():
    rng = np.random.default_rng(8)
    sets = [rng.gamma(s, size=n) + o for s, n, o in ((0.7, 300, 0.0), (2.0, 1000, 5.0), (9.0, 500, -3.0),
                                                     (50.0, 2000, 0.0), (1.5, 12, 1.0))]
    sets += [np.array([1.0, 2.0]), np.full(10, 3.0), np.array([1.0, np.nan, 2.0, 3.0]), -np.abs(sets[1])]
    sets += [x for _, x in _j_shaped_sets(46)][:4] + [np.array([1.0, 1.0, 1.0, 2.0, 2.0])]
    for loc in (None, 0.0):
        cpu = G.fit_gamma_batch(sets, loc=loc)
        gpu = G.fit_gamma_batch([torch.from_numpy(s).cuda() for s in sets], loc=loc)
        assert gpu.shape.is_cuda and gpu.method.is_cuda
        np.testing.assert_array_equal(gpu.status.cpu().numpy(), cpu.status)
        np.testing.assert_array_equal(gpu.method.cpu().numpy(), cpu.method)
        if loc is None:
            assert set(cpu.method.tolist()) == {0, 1, 2}  # none, mle and mps all occur
        ok = cpu.status == 0
        for name in ("shape", "loc", "scale", "loglik"):
            np.testing.assert_allclose(getattr(gpu, name).cpu().numpy()[ok], getattr(cpu, name)[ok], rtol=1e-6)
    square = rng.gamma(2.0, size=(64, 256))
    gpu = G.fit_gamma_batch(torch.from_numpy(square).cuda())
    np.testing.assert_allclose(gpu.loglik.cpu().numpy(), G.fit_gamma_batch(square).loglik, rtol=1e-9)


@requires_cuda
def test_cuda_ppf_matches_cpu():
    q = torch.linspace(0.01, 0.99, 99, dtype=torch.float64, device="cuda")
    out = G.gamma_ppf(q, 2.5, 1.0, 3.0)
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), G.gamma_ppf(q.cpu().numpy(), 2.5, 1.0, 3.0), rtol=1e-13)
