"""Diagonal-GMM log-likelihood kernel and DiagGMMScorer against sklearn and the SciPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx.reference import gmm as ref
from asdx.scoring.gmm import DiagGMMScorer, gmm_diag_loglik
from sklearn.exceptions import NotFittedError

from conftest import fixture_path, isa_params, native_isa, requires_cuda


def relative_error(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300))) if expected.size else 0.0


def random_mixture(rng, k: int, d: int, scale: float = 1.0, tiny: bool = False):
    weights = rng.dirichlet(np.ones(k))
    means = scale * rng.standard_normal((k, d))
    variances = scale**2 * rng.uniform(0.2, 3.0, (k, d))
    if tiny:
        variances[rng.random((k, d)) < 0.3] = 1e-10 * scale**2
    return weights, means, variances


# ------------------------------------------------------------------ golden fixture


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-6), (np.float32, 1e-4)])
def test_fixture_matches_sklearn(dtype, tolerance):
    z = np.load(fixture_path("gmm_diag.npz"))
    out = gmm_diag_loglik(z["query"].astype(dtype), z["weights"], z["means"], z["variances"])
    assert out.dtype == np.float64 and out.shape == z["loglik"].shape
    assert relative_error(out, z["loglik"]) < tolerance


def test_matches_sklearn_score_samples_of_a_fitted_model():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    x = np.vstack([rng.standard_normal((200, 7)), 4 + 0.3 * rng.standard_normal((100, 7))])
    model = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    queries = 2 * rng.standard_normal((50, 7))
    out = gmm_diag_loglik(queries, model.weights_, model.means_, model.covariances_)
    assert relative_error(out, model.score_samples(queries)) < 1e-9


# ------------------------------------------------------------ kernel vs reference


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 40),
    d=st.integers(1, 37),
    k=st.integers(1, 5),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    tiny=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_matches_reference(n, d, k, scale, tiny, dtype, seed):
    rng = np.random.default_rng(seed)
    weights, means, variances = random_mixture(rng, k, d, scale, tiny)
    queries = (means[rng.integers(0, k, n)] + scale * rng.standard_normal((n, d))).astype(dtype)
    out = gmm_diag_loglik(queries, weights, means, variances)
    assert out.shape == (n,) and out.dtype == np.float64
    expected = ref.gmm_diag_loglik(queries, weights, means.astype(dtype), variances.astype(dtype))
    # Relative to the size of the terms summed: with tiny variances the log-likelihood is
    # a sum of terms of size ~1e10 whose total may be much smaller.
    scale_of_terms = np.abs(expected) + d * np.log(np.maximum(1.0, 1.0 / variances.min() * scale**2)) + d
    tolerance = 1e-10 if dtype == np.float64 else 1e-5
    if n:
        assert np.max(np.abs(out - expected) / scale_of_terms) < tolerance


# ------------------------------------------------------------ every ISA path of the CPU kernel
# Each path (csrc/cpu/isa.h) has its own vector width (avx512 16 float32 / 8 float64 lanes, avx2 8 / 4,
# baseline 4 / 2) and tile (avx512 8 queries x 2 components, the others 4 x 2); rows are padded to a
# 64-byte line. The shapes below are not multiples of any of them: dims 1, 5, 15, 17, 33, 768, 769;
# n below, at and past one tile; k odd. Tolerances: docs/kernels.md.


def gmm_error(out, expected, variances, scale: float = 1.0) -> float:
    """Error relative to the size of the terms summed (see test_kernel_matches_reference)."""
    d = variances.shape[1]
    scale_of_terms = np.abs(expected) + d * np.log(np.maximum(1.0, 1.0 / variances.min() * scale**2)) + d
    return float(np.max(np.abs(out - expected) / scale_of_terms)) if len(out) else 0.0


@pytest.mark.parametrize("path", isa_params())
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 40),
    d=st.one_of(st.sampled_from([1, 5, 15, 17, 33]), st.integers(1, 40)),
    k=st.integers(1, 5),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    tiny=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_isa_path_matches_reference(path, n, d, k, scale, tiny, dtype, seed):
    rng = np.random.default_rng(seed)
    weights, means, variances = random_mixture(rng, k, d, scale, tiny)
    queries = (means[rng.integers(0, k, n)] + scale * rng.standard_normal((n, d))).astype(dtype)
    with native_isa(path):
        out = gmm_diag_loglik(queries, weights, means, variances)
    assert out.shape == (n,) and out.dtype == np.float64
    expected = ref.gmm_diag_loglik(queries, weights, means.astype(dtype), variances.astype(dtype))
    assert gmm_error(out, expected, variances, scale) < (1e-10 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("path", isa_params())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_isa_path_on_adversarial_shapes(path, dtype):
    rng = np.random.default_rng(13)
    for d in (1, 5, 15, 17, 33, 768, 769):
        weights, means, variances = random_mixture(rng, 3, d, tiny=True)
        means += 1e4  # far from the origin: x - mu is formed first, exactly for nearby queries
        for n in (1, 3, 7, 9, 17):
            queries = (means[rng.integers(0, 3, n)] + rng.standard_normal((n, d))).astype(dtype)
            with native_isa(path):
                out = gmm_diag_loglik(queries, weights, means, variances)
            expected = ref.gmm_diag_loglik(queries, weights, means.astype(dtype), variances.astype(dtype))
            assert gmm_error(out, expected, variances) < (1e-10 if dtype == np.float64 else 1e-5), (d, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_isa_paths_agree_with_each_other(dtype):
    from asdx.kernels import cpu_isa_supported

    rng = np.random.default_rng(14)
    weights, means, variances = random_mixture(rng, 7, 101)
    queries = (means[rng.integers(0, 7, 300)] + rng.standard_normal((300, 101))).astype(dtype)
    results = {}
    for path in cpu_isa_supported():
        with native_isa(path):
            results[path] = gmm_diag_loglik(queries, weights, means, variances)
    for path, out in results.items():
        assert gmm_error(out, results["baseline"], variances) < (1e-10 if dtype == np.float64 else 1e-5), path


def test_tiny_variances_keep_the_direct_form_accurate():
    # A query exactly at a component with variances 1e-10: the expanded form sklearn
    # uses (x² p − 2 x μ p + μ² p) would cancel 1e10-sized terms.
    d = 16
    means = np.stack([np.full(d, 3.0), np.zeros(d)])
    variances = np.stack([np.full(d, 1e-10), np.ones(d)])
    weights = np.array([0.5, 0.5])
    queries = np.stack([means[0], means[0] + 1e-5, means[1]])
    out = gmm_diag_loglik(queries, weights, means, variances)
    expected = ref.gmm_diag_loglik(queries, weights, means, variances)
    assert relative_error(out, expected) < 1e-12
    assert out[0] == pytest.approx(np.log(0.5) - 0.5 * d * np.log(2 * np.pi * 1e-10), rel=1e-13)


def test_far_queries_stay_finite():
    # Every component's log-density is around -1e14: log-sum-exp must not underflow to -inf.
    weights, means, variances = np.array([0.3, 0.7]), np.zeros((2, 4)), np.ones((2, 4))
    out = gmm_diag_loglik(np.full((2, 4), 1e7), weights, means, variances)
    assert np.isfinite(out).all()
    assert relative_error(out, ref.gmm_diag_loglik(np.full((2, 4), 1e7), weights, means, variances)) < 1e-12


def test_zero_weight_component_is_ignored():
    rng = np.random.default_rng(1)
    weights, means, variances = random_mixture(rng, 3, 5)
    queries = rng.standard_normal((10, 5))
    with_zero = gmm_diag_loglik(queries, np.r_[weights, 0.0], np.vstack([means, means[:1]]),
                                np.vstack([variances, variances[:1]]))
    assert relative_error(with_zero, gmm_diag_loglik(queries, weights, means, variances)) < 1e-14


def test_threads_and_tiles_cover_all_rows():
    from asdx._native import get_num_threads, set_num_threads

    rng = np.random.default_rng(2)
    weights, means, variances = random_mixture(rng, 5, 19)
    queries = rng.standard_normal((1003, 19))
    before = get_num_threads()
    try:
        set_num_threads(1)
        single = gmm_diag_loglik(queries, weights, means, variances)
        set_num_threads(2)
        double = gmm_diag_loglik(queries, weights, means, variances)
    finally:
        set_num_threads(before)
    np.testing.assert_array_equal(single, double)
    assert relative_error(single, ref.gmm_diag_loglik(queries, weights, means, variances)) < 1e-12


def test_empty_and_torch():
    rng = np.random.default_rng(3)
    weights, means, variances = random_mixture(rng, 2, 4)
    assert gmm_diag_loglik(np.zeros((0, 4)), weights, means, variances).shape == (0,)
    queries = rng.standard_normal((6, 4))
    out = gmm_diag_loglik(torch.from_numpy(queries).float(), weights, means, variances)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert relative_error(out.numpy(), ref.gmm_diag_loglik(queries, weights, means, variances)) < 1e-5


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(queries=np.zeros((3, 5))), "means"),
        (dict(variances=np.ones((2, 3))), "variances"),
        (dict(weights=np.ones(3) / 3), "weights"),
        (dict(weights=np.array([1.0, -0.5])), "weights"),
        (dict(variances=np.array([[1.0, 0.0, 1.0, 1.0], [1.0] * 4])), "variances"),
        (dict(queries=np.array([[0.0, np.nan, 0.0, 0.0]])), "queries"),
        (dict(means=np.full((2, 4), np.inf)), "means"),
        (dict(queries=np.zeros(4)), "queries"),
    ],
)
def test_bad_input_names_the_argument(change, name):
    args = dict(queries=np.zeros((3, 4)), weights=np.array([0.5, 0.5]), means=np.zeros((2, 4)),
                variances=np.ones((2, 4)))
    args.update(change)
    with pytest.raises(ValueError, match=name):
        gmm_diag_loglik(**args)


def test_float32_variance_overflow_is_reported():
    with pytest.raises(ValueError, match="variances: 1/variance overflows float32"):
        gmm_diag_loglik(np.zeros((1, 2), np.float32), [1.0], np.zeros((1, 2)), np.full((1, 2), 1e-40))


# ------------------------------------------------------------------ scorer


def test_scorer_is_negative_sklearn_loglik():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(4)
    x = np.vstack([rng.standard_normal((150, 6)), 3 + rng.standard_normal((150, 6))])
    scorer = DiagGMMScorer(n_components=2, reg_covar=1e-5, random_state=0)
    assert scorer.fit(x) is scorer
    model = GaussianMixture(2, covariance_type="diag", reg_covar=1e-5, random_state=0).fit(x)
    queries = 2 * rng.standard_normal((40, 6))
    scores = scorer.score_samples(queries)
    assert scores.dtype == np.float64 and scores.shape == (40,)
    assert relative_error(scores, -model.score_samples(queries)) < 1e-9
    assert scorer.weights_.shape == (2,) and scorer.variances_.shape == (2, 6) and scorer.n_features_in_ == 6
    far = scorer.score_samples(np.full((1, 6), 50.0))
    assert far[0] > scores.max()


def test_scorer_errors_name_the_argument():
    x = np.random.default_rng(5).standard_normal((20, 3))
    with pytest.raises(NotFittedError, match="fit"):
        DiagGMMScorer().score_samples(x)
    with pytest.raises(ValueError, match="n_components"):
        DiagGMMScorer(n_components=0).fit(x)
    with pytest.raises(ValueError, match="reg_covar"):
        DiagGMMScorer(reg_covar=-1.0).fit(x)
    with pytest.raises(ValueError, match="domain"):  # fit's domain stratifies the folds of train_scores_
        DiagGMMScorer().fit(x, domain=[0] * 3)
    with pytest.raises(ValueError, match="domain"):  # an unknown label, not a silent third stratum
        DiagGMMScorer().fit(x, domain=["src"] * 10 + ["target"] * 10)
    with pytest.raises(ValueError, match="X has 2 features"):
        DiagGMMScorer().fit(x).score_samples(x[:, :2])


# ------------------------------------------------------------------ CUDA


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, d, k", [(0, 4, 2), (1, 1, 1), (300, 16, 4), (1000, 768, 16)])
def test_cuda_matches_cpu(dtype, n, d, k):
    rng = np.random.default_rng(6)
    weights, means, variances = random_mixture(rng, k, d, tiny=True)
    queries = torch.from_numpy(means[rng.integers(0, k, n)] + rng.standard_normal((n, d))).to(dtype)
    gpu = gmm_diag_loglik(queries.cuda(), weights, means, variances)
    cpu = gmm_diag_loglik(queries, weights, means, variances)
    assert gpu.is_cuda and gpu.dtype == torch.float64 and gpu.shape == (n,)
    # |gpu - cpu| <= rtol |cpu| + atol. The log-likelihoods reach ~1e12 here (variances of 1e-10);
    # float32 rounds each term to ~1e-7 relative (CPU float32 vs float64 differ by < 3e-7 relative).
    rtol, atol = (1e-10, 1e-9) if dtype == torch.float64 else (2e-6, 1e-4)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=rtol, atol=atol)
