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

def test_fixture_free_fit_is_at_least_as_likely_as_scipy():
    # scipy's Nelder-Mead is not always at the maximum, so a higher log-likelihood
    # than loglik3 is allowed (and happens on shape0.8 and small_n); lower is not.
    data, names = _fixture_sets()
    for name in names:
        x = data[f"{name}/x"]
        scipy_ll = float(data[f"{name}/loglik3"])
        fit = G.fit_gamma(x)
        assert fit.status == 0, name
        tolerance = 1e-6 * abs(scipy_ll)
        assert fit.loglik >= scipy_ll - tolerance, name
        # The reported log-likelihood is the real one at the reported parameters.
        assert ref.gamma_loglik(x, fit.shape, fit.loc, fit.scale) >= scipy_ll - tolerance, name
        np.testing.assert_allclose(fit.loglik, ref.gamma_loglik(x, fit.shape, fit.loc, fit.scale), rtol=1e-9)
        assert fit.loc < x.min()
        threshold = fit.ppf(0.9)
        np.testing.assert_allclose(threshold, ref.gamma_ppf(0.9, fit.shape, fit.loc, fit.scale), rtol=1e-6)


def test_fixture_fit_matches_scipy_where_scipy_has_an_interior_maximum():
    # On the sets where scipy stops at an interior point our optimum is the same one.
    data, names = _fixture_sets()
    for name in ("ae_like", "lognormalish", "shape2", "shape9_loc"):
        assert name in names
        fit = G.fit_gamma(data[f"{name}/x"])
        np.testing.assert_allclose(fit.ppf(0.9), data[f"{name}/thr3_q90"], rtol=1e-4)


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

def _profile_max(x: np.ndarray) -> float:
    """Best profile log-likelihood over a dense grid of loc (scipy's special functions):
    an independent check that the kernel's search does not miss the maximum. The grid
    stops at a gap of 100 (max - min): beyond it the shape exceeds ~1e5 and scipy's
    logpdf loses ~1e-5 of the total to cancellation (xlogy(a - 1, x) - gammaln(a))."""
    spread = x.max() - x.min()
    best = -np.inf
    for gap in spread * np.logspace(-6, 2, 300):
        y = x - (x.min() - gap)
        c = math.log(y.mean()) - np.log(y).mean()
        if not c > 0:
            continue
        a = _solve_shape_reference(c)
        best = max(best, ref.gamma_loglik(x, a, x.min() - gap, y.mean() / a))
    return best


def _solve_shape_reference(c: float) -> float:
    from scipy.optimize import brentq

    return math.exp(brentq(lambda t: math.log(math.exp(t)) - special.digamma(math.exp(t)) - c, -40.0, 40.0,
                           xtol=1e-14))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.3, 200.0), st.floats(-1e3, 1e3), st.floats(-3.0, 3.0).map(lambda e: 10.0 ** e),
       st.integers(5, 400), st.integers(0, 2**31 - 1))
def test_free_fit_reaches_the_profile_maximum(shape, loc, scale, n, seed):
    x = loc + scale * np.random.default_rng(seed).gamma(shape, size=n)
    if x.max() == x.min():
        return
    fit = G.fit_gamma(x)
    assert fit.status == 0
    assert fit.loc < x.min()
    ours = fit.loglik
    if fit.shape < 1e5:  # where scipy's logpdf is accurate enough to check ours
        np.testing.assert_allclose(ours, ref.gamma_loglik(x, fit.shape, fit.loc, fit.scale), rtol=1e-9)
    tolerance = 1e-7 * max(1.0, abs(ours))
    assert ours >= _profile_max(x) - tolerance
    scipy_fit = ref.fit_gamma(x)  # scipy may stop short of the maximum; never above it
    assert ours >= ref.gamma_loglik(x, *scipy_fit) - max(tolerance, 1e-6 * abs(ours))


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


def test_batch_shapes_and_kinds():
    rng = np.random.default_rng(3)
    ragged = [rng.gamma(2.0, size=n) + 5 for n in (3, 10, 257, 1000)]
    batch = G.fit_gamma_batch(ragged)
    assert len(batch) == 4 and batch.status.dtype == np.int32
    for i, x in enumerate(ragged):
        assert batch[i] == G.fit_gamma(x)
    square = rng.gamma(3.0, size=(6, 50))
    from_array = G.fit_gamma_batch(square, loc=0.0)
    from_tensor = G.fit_gamma_batch(torch.from_numpy(square), loc=0.0)
    assert isinstance(from_tensor.shape, torch.Tensor)
    np.testing.assert_array_equal(from_array.shape, from_tensor.shape.numpy())
    for i in range(6):
        assert from_array[i] == G.fit_gamma(square[i], loc=0.0)
    assert len(G.fit_gamma_batch([])) == 0
    assert len(G.fit_gamma_batch(np.zeros((0, 5)))) == 0


@pytest.mark.parametrize("big_at", ["first", "middle", "last"])
def test_ragged_batch_is_split_by_work_with_identical_results(big_at):
    # One big set among many small ones: the CPU kernel splits the sets into contiguous runs of about
    # equal total length (not equal counts); every set must still be fitted exactly once, as alone.
    import asdx

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
    assert np.all(serial.status == 0)
    for threads, batch in results.items():
        for name in ("shape", "loc", "scale", "loglik", "status"):
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


# ----------------------------------------------------------------------------- GammaThreshold

def test_threshold_default_is_the_baseline_rule():
    x = np.random.default_rng(5).gamma(3.0, 2.0, size=1000) + 1.0
    model = T.GammaThreshold().fit(x)
    assert model.q == 0.9 and model.loc is None
    fit = G.fit_gamma(x)
    assert (model.shape_, model.loc_, model.scale_) == (fit.shape, fit.loc, fit.scale)
    assert model.threshold_ == fit.ppf(0.9)
    np.testing.assert_allclose(model.threshold_, ref.gamma_threshold(x), rtol=1e-3)
    fixed = T.GammaThreshold(q=0.95, loc=0.0).fit(x)
    assert fixed.loc_ == 0.0 and fixed.threshold_ == G.fit_gamma(x, loc=0.0).ppf(0.95)


def test_decide_is_strict():
    model = T.GammaThreshold().fit(np.random.default_rng(6).gamma(2.0, size=200))
    t = model.threshold_
    scores = np.array([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), t + 1.0, -5.0])
    decisions = model.decide(scores)
    assert decisions.dtype == np.int64
    np.testing.assert_array_equal(decisions, [0, 1, 0, 1, 0])
    as_tensor = model.decide(torch.from_numpy(scores))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="scores"):
        model.decide(np.array([1.0, np.nan]))


@pytest.mark.parametrize("train", [np.array([3.0, 5.0]), np.full(20, 4.0), np.array([2.0])])
def test_threshold_fallback_for_unfittable_training_scores(train):
    with pytest.warns(G.GammaFitWarning, match="maximum"):
        model = T.GammaThreshold().fit(train)
    assert model.threshold_ == train.max() and math.isnan(model.shape_)
    assert model.status_ in (1, 2)
    np.testing.assert_array_equal(model.decide(np.array([train.max(), train.max() + 1e-9])), [0, 1])


def test_threshold_errors():
    with pytest.raises(ValueError, match="train_scores"):
        T.GammaThreshold().fit([1.0, np.inf, 2.0, 3.0])
    with pytest.raises(ValueError, match="train_scores"):
        T.GammaThreshold(loc=0.0).fit([-1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="train_scores"):
        T.GammaThreshold().fit([])
    with pytest.raises(ValueError, match="q"):
        T.GammaThreshold(q=1.0).fit([1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="fit"):
        T.GammaThreshold().decide([1.0])


def test_threshold_round_trip_through_json():
    for train in (np.random.default_rng(7).gamma(2.0, size=100), np.full(5, 1.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", G.GammaFitWarning)
            model = T.GammaThreshold(q=0.8).fit(train)
        restored = T.GammaThreshold.from_dict(json.loads(json.dumps(model.to_dict(), allow_nan=False)))
        assert restored.threshold_ == model.threshold_ and restored.q == 0.8 and restored.status_ == model.status_
        for name in ("shape_", "loc_", "scale_"):
            a, b = getattr(model, name), getattr(restored, name)
            assert a == b or (math.isnan(a) and math.isnan(b))
    with pytest.raises(ValueError, match="state"):
        T.GammaThreshold.from_dict({"q": 0.9})


# ----------------------------------------------------------------------------- CUDA

@requires_cuda
def test_cuda_fit_matches_cpu():
    rng = np.random.default_rng(8)
    sets = [rng.gamma(s, size=n) + o for s, n, o in ((0.7, 300, 0.0), (2.0, 1000, 5.0), (9.0, 500, -3.0),
                                                     (50.0, 2000, 0.0), (1.5, 12, 1.0))]
    sets += [np.array([1.0, 2.0]), np.full(10, 3.0), np.array([1.0, np.nan, 2.0, 3.0]), -np.abs(sets[1])]
    for loc in (None, 0.0):
        cpu = G.fit_gamma_batch(sets, loc=loc)
        gpu = G.fit_gamma_batch([torch.from_numpy(s).cuda() for s in sets], loc=loc)
        assert gpu.shape.is_cuda
        np.testing.assert_array_equal(gpu.status.cpu().numpy(), cpu.status)
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
