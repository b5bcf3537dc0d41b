"""Batched Mahalanobis kernel, fitting helpers and MahalanobisScorer against the NumPy reference."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx.reference import mahalanobis as ref
from asdx.scoring.covariance import covariance, stable_precision
from asdx.scoring.mahalanobis import MahalanobisScorer, ae_mahalanobis_scores, mahalanobis
from sklearn.exceptions import NotFittedError

from conftest import fixture_path, isa_params, native_isa, requires_cuda


def random_spd(rng, d: int, condition: float = 10.0) -> np.ndarray:
    """SPD matrix with the given condition number and random eigenvectors."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eigenvalues = np.geomspace(1.0, condition, d) if d > 1 else np.ones(1)
    return (q * eigenvalues) @ q.T


def relative_error(actual, expected) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300))) if expected.size else 0.0


# ------------------------------------------------------------------ golden fixture


def test_fixture_distances_match_to_1e6():
    z = np.load(fixture_path("mahalanobis.npz"))
    precision, factor = stable_precision(z["cov"], ridge=False)
    np.testing.assert_allclose(factor @ factor.T, np.linalg.inv(z["cov"]), rtol=1e-9, atol=1e-12)
    d = mahalanobis(z["query"], z["mean"], precision)
    assert d.shape == (len(z["query"]), 1) and d.dtype == np.float64
    assert relative_error(np.sqrt(d[:, 0]), z["dist"]) < 1e-6


def test_fixture_float32_queries():
    z = np.load(fixture_path("mahalanobis.npz"))
    precision, _ = stable_precision(z["cov"])
    d = mahalanobis(z["query"].astype(np.float32), z["mean"], precision)
    assert d.dtype == np.float32
    assert relative_error(np.sqrt(d[:, 0]), z["dist"]) < 1e-4


# ------------------------------------------------------------ kernel vs reference


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 70),
    d=st.integers(1, 40),
    k=st.integers(1, 3),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_matches_reference(n, d, k, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    means = scale * rng.standard_normal((k, d))
    precisions = np.stack([random_spd(rng, d) / scale**2 for _ in range(k)])
    queries = means[rng.integers(0, k, n)] + scale * rng.standard_normal((n, d))
    out = mahalanobis(queries.astype(dtype), means, precisions)
    assert out.shape == (n, k) and out.dtype == dtype
    # float32: the queries themselves are rounded, then centred and multiplied in float32.
    tolerance = 1e-9 if dtype == np.float64 else 2e-3 if scale == 1e6 else 1e-4
    expected = ref.mahalanobis(queries.astype(dtype), means.astype(dtype), precisions)
    assert relative_error(out, expected) < tolerance


def test_large_dims_exercise_every_tile_edge():
    rng = np.random.default_rng(1)
    for n, d in [(1, 1), (17, 13), (33, 70), (130, 257)]:
        means = rng.standard_normal((2, d))
        precisions = np.stack([random_spd(rng, d, 100.0) for _ in range(2)])
        queries = rng.standard_normal((n, d))
        expected = ref.mahalanobis(queries, means, precisions)
        assert relative_error(mahalanobis(queries, means, precisions), expected) < 1e-10
        assert relative_error(mahalanobis(queries.astype(np.float32), means, precisions), expected) < 1e-4


# ------------------------------------------------------------ every ISA path of the CPU kernel
# Each path (csrc/cpu/isa.h) has its own register tile: avx512 32 float32 (16 float64) queries x 12
# columns, avx2 16 (8) x 6, baseline 8 (4) x 6, and packs the queries in squares of one vector's
# lanes. The shapes below are not multiples of any tile: dims 1, 5, 15, 17, 33, 640, 641 against
# panels of 6 or 12 columns and packing squares of 2 to 16 lanes; n below, at and past one tile.
# Tolerances: docs/kernels.md (relative 1e-9 float64, 1e-4 float32; 2e-3 in float32 when the
# queries lie 1e6 from the origin, where rounding the queries to float32 dominates).


def mahalanobis_tolerance(dtype, scale: float = 1.0) -> float:
    return 1e-9 if dtype == np.float64 else 2e-3 if scale >= 1e6 else 1e-4


@pytest.mark.parametrize("path", isa_params())
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 70),
    d=st.one_of(st.sampled_from([1, 5, 15, 17, 33]), st.integers(1, 48)),
    k=st.integers(1, 3),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_isa_path_matches_reference(path, n, d, k, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    means = scale * rng.standard_normal((k, d))
    precisions = np.stack([random_spd(rng, d) / scale**2 for _ in range(k)])
    queries = (means[rng.integers(0, k, n)] + scale * rng.standard_normal((n, d))).astype(dtype)
    with native_isa(path):
        out = mahalanobis(queries, means, precisions)
    assert out.shape == (n, k) and out.dtype == dtype
    expected = ref.mahalanobis(queries, means.astype(dtype), precisions)
    assert relative_error(out, expected) < mahalanobis_tolerance(dtype, scale)


@pytest.mark.parametrize("path", isa_params())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_isa_path_on_adversarial_shapes(path, dtype):
    rng = np.random.default_rng(11)
    for d in (1, 5, 15, 17, 33, 640, 641):
        means = 1e4 + rng.standard_normal((2, d))  # far from the origin: the centring must come first
        precisions = np.stack([random_spd(rng, d, 100.0) for _ in range(2)])
        for n in (1, 3, 31, 33, 70):
            queries = (means[rng.integers(0, 2, n)] + rng.standard_normal((n, d))).astype(dtype)
            with native_isa(path):
                out = mahalanobis(queries, means, precisions)
            # The reference gets the same rounded queries and means: the tolerance is the kernel's own.
            expected = ref.mahalanobis(queries, means.astype(dtype), precisions)
            assert relative_error(out, expected) < mahalanobis_tolerance(dtype), (d, n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_isa_paths_agree_with_each_other(dtype):
    from asdx.kernels import cpu_isa_supported

    rng = np.random.default_rng(12)
    d = 97
    means = rng.standard_normal((3, d))
    precisions = np.stack([random_spd(rng, d, 1e3) for _ in range(3)])
    queries = (means[rng.integers(0, 3, 300)] + rng.standard_normal((300, d))).astype(dtype)
    results = {}
    for path in cpu_isa_supported():
        with native_isa(path):
            results[path] = mahalanobis(queries, means, precisions)
    for path, out in results.items():
        assert relative_error(out, results["baseline"]) < mahalanobis_tolerance(dtype), path


def test_thread_count_does_not_change_results():
    # The CPU kernel hands out blocks of kBlockBytes / (itemsize * D) query rows (rounded down to a
    # multiple of the register tile; csrc/cpu/mahalanobis.cpp), one block per work item. With D = 256
    # that is 96 rows in float64 and 192 in float32, so 1000 queries are 11 (6) blocks and two
    # threads really split them; the results must not depend on the split, and both must be right.
    rng = np.random.default_rng(2)
    d = 256
    queries, means = rng.standard_normal((1000, d)), rng.standard_normal((2, d))
    precisions = np.stack([random_spd(rng, d) for _ in range(2)])
    expected = ref.mahalanobis(queries, means, precisions)
    from asdx._native import get_num_threads, set_num_threads

    before = get_num_threads()
    try:
        for dtype, tolerance in [(np.float64, 1e-10), (np.float32, 1e-4)]:
            q = queries.astype(dtype)
            block_rows = (192 * 1024 // (np.dtype(dtype).itemsize * d))
            assert q.shape[0] > 4 * block_rows  # several blocks: both threads get work
            set_num_threads(1)
            single = mahalanobis(q, means, precisions)
            set_num_threads(2)
            double = mahalanobis(q, means, precisions)
            np.testing.assert_array_equal(single, double)
            assert relative_error(double, expected) < tolerance
    finally:
        set_num_threads(before)


def test_empty_queries_give_empty_result():
    out = mahalanobis(np.zeros((0, 5)), np.zeros((3, 5)), np.stack([np.eye(5)] * 3))
    assert out.shape == (0, 3)
    out = ae_mahalanobis_scores(np.zeros((0, 5)), np.stack([np.eye(5)] * 2))
    assert out.shape == (0,)


def test_torch_input_gives_torch_output():
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((20, 6))
    precisions = random_spd(rng, 6)
    out = mahalanobis(torch.from_numpy(queries).float(), torch.zeros(6), torch.from_numpy(precisions))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (20, 1)
    assert relative_error(out.numpy(), ref.mahalanobis(queries, np.zeros(6), precisions)) < 1e-4


# ------------------------------------------------------------------ AE-baseline form


def test_ae_form_is_min_over_domains_without_mean():
    rng = np.random.default_rng(4)
    errors = rng.standard_normal((50, 12))
    precisions = np.stack([random_spd(rng, 12), random_spd(rng, 12, 1e3)])
    scores = ae_mahalanobis_scores(errors, precisions)
    assert scores.shape == (50,)
    assert relative_error(scores, ref.ae_mahalanobis_scores(errors, precisions)) < 1e-10
    # It equals the literal baseline code: the mean of D P Dᵀ over the clip's frame rows.
    frames = rng.standard_normal((5, 12))
    d_p_dt = frames @ precisions[0] @ frames.T
    literal = min((frames @ p @ frames.T).mean(1).sum() / 5 for p in precisions)
    assert d_p_dt.shape == (5, 5)
    np.testing.assert_allclose(ae_mahalanobis_scores(frames.mean(0, keepdims=True), precisions)[0], literal,
                               rtol=1e-10)


# ------------------------------------------------------------------ fitting helpers


def test_covariance_options():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 8)) * np.arange(1, 9)
    np.testing.assert_allclose(covariance(x), np.cov(x, rowvar=False))
    from sklearn.covariance import LedoitWolf

    np.testing.assert_allclose(covariance(x, "ledoit-wolf"), LedoitWolf().fit(x).covariance_)
    s = np.cov(x, rowvar=False)
    expected = 0.7 * s + 0.3 * np.trace(s) / 8 * np.eye(8)
    np.testing.assert_allclose(covariance(x, 0.3), expected, rtol=1e-12)
    for bad in ("oas", 1.5, -0.1, [0.1]):
        with pytest.raises(ValueError, match="shrinkage"):
            covariance(x, bad)
    with pytest.raises(ValueError, match="samples"):
        covariance(x[:1])


def test_ill_conditioned_covariance_is_inverted_accurately():
    rng = np.random.default_rng(6)
    cov = random_spd(rng, 30, 1e10)
    precision, factor = stable_precision(cov, ridge=False)
    np.testing.assert_allclose(precision @ cov, np.eye(30), atol=1e-4)
    np.testing.assert_allclose(np.triu(factor, 1), 0.0)


def test_singular_covariance_ridge_warns_or_raises():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 12))  # 5 samples in 12 dims: rank 4
    cov = np.cov(x, rowvar=False)
    with pytest.raises(ValueError, match="cov: is not positive definite"):
        stable_precision(cov, ridge=False)
    with pytest.warns(UserWarning, match="added a ridge of") as record:
        precision, factor = stable_precision(cov)
    ridge = float(str(record[0].message).split("ridge of ")[1].split(" ")[0])
    largest = np.linalg.eigvalsh(cov)[-1]
    assert 1e-10 * largest <= ridge < 2.1e-10 * largest
    np.testing.assert_allclose(factor @ factor.T, precision)
    assert np.isfinite(precision).all()
    expected = np.linalg.inv(cov + ridge * np.eye(12))
    np.testing.assert_allclose(precision, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert np.linalg.eigvalsh(precision)[0] > 0
    with pytest.raises(ValueError, match="no positive variance"):
        stable_precision(np.zeros((3, 3)))


def test_indefinite_precision_is_rejected_by_name():
    bad = np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0])])
    with pytest.raises(ValueError, match=r"precisions\[1\]: is not positive definite"):
        mahalanobis(np.zeros((2, 3)), np.zeros((2, 3)), bad)
    with pytest.raises(ValueError, match=r"precisions\[0\]: is not symmetric"):
        mahalanobis(np.zeros((2, 3)), np.zeros(3), np.triu(np.ones((3, 3))))


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "queries, means, precisions, name",
    [
        (np.zeros((4, 3)), np.zeros((1, 4)), np.eye(4)[None], "means"),
        (np.zeros((4, 3)), np.zeros((2, 3)), np.eye(3)[None], "precisions"),
        (np.zeros((4, 3)), np.zeros((1, 3)), np.eye(4)[None], "precisions"),
        (np.array([[0.0, np.nan, 0.0]]), np.zeros(3), np.eye(3), "queries"),
        (np.zeros((4, 3)), np.array([0.0, np.inf, 0.0]), np.eye(3), "means"),
        (np.zeros(3), np.zeros(3), np.eye(3), "queries"),
        (np.zeros((4, 3), dtype=complex), np.zeros(3), np.eye(3), "queries"),
    ],
)
def test_bad_input_names_the_argument(queries, means, precisions, name):
    with pytest.raises(ValueError, match=name):
        mahalanobis(queries, means, precisions)


# ------------------------------------------------------------------ scorer


def test_scorer_single_and_per_domain():
    rng = np.random.default_rng(8)
    source = rng.standard_normal((300, 6))
    target = 5.0 + 0.5 * rng.standard_normal((40, 6))
    x = np.vstack([source, target])
    queries = rng.standard_normal((25, 6)) * 2

    single = MahalanobisScorer().fit(x)
    assert single.domains_ == ("all",) and single.means_.shape == (1, 6)
    expected = ref.mahalanobis_from_covariances(queries, x.mean(0), np.cov(x, rowvar=False))[:, 0]
    scores = single.score_samples(queries)
    assert scores.dtype == np.float64 and scores.shape == (25,)
    assert relative_error(scores, expected) < 1e-9

    for labels in (["source"] * 300 + ["target"] * 40, np.r_[np.zeros(300), np.ones(40)].astype(int)):
        scorer = MahalanobisScorer().fit(x, domain=labels)
        assert scorer is not None and scorer.domains_ == ("source", "target")
        per_domain = np.stack([
            ref.mahalanobis_from_covariances(queries, part.mean(0), np.cov(part, rowvar=False))[:, 0]
            for part in (source, target)
        ], 1)
        assert relative_error(scorer.domain_scores(queries), per_domain) < 1e-9
        assert relative_error(scorer.score_samples(queries), per_domain.min(1)) < 1e-9


def test_scorer_shrinkage_and_float32_and_torch():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30, 50))  # fewer rows than dims: shrinkage makes it invertible
    scorer = MahalanobisScorer(shrinkage="ledoit-wolf")
    assert scorer.fit(x) is scorer
    s64 = scorer.score_samples(x)
    s32 = scorer.score_samples(torch.from_numpy(x).float())
    assert isinstance(s32, np.ndarray) and s32.dtype == np.float64
    assert relative_error(s32, s64) < 1e-3


def test_scorer_errors_name_the_argument():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((20, 4))
    with pytest.raises(NotFittedError, match="fit"):
        MahalanobisScorer().score_samples(x)
    with pytest.raises(ValueError, match="domain"):
        MahalanobisScorer().fit(x, domain=["source"] * 19)
    with pytest.raises(ValueError, match="domain"):
        MahalanobisScorer().fit(x, domain=["source"] * 19 + ["test"])
    with pytest.raises(ValueError, match="target domain has 1 sample"):
        MahalanobisScorer().fit(x, domain=[0] * 19 + [1])
    scorer = MahalanobisScorer().fit(x)
    with pytest.raises(ValueError, match="X has 3 features"):
        scorer.score_samples(x[:, :3])
    with pytest.raises(ValueError, match="X"):
        scorer.score_samples(np.full((2, 4), np.nan))


# ------------------------------------------------------------------ CUDA


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, d, k", [(0, 5, 2), (1, 1, 1), (100, 64, 2), (1000, 130, 3), (257, 640, 2)])
def test_cuda_matches_cpu(dtype, n, d, k):
    rng = np.random.default_rng(11)
    means = rng.standard_normal((k, d))
    precisions = np.stack([random_spd(rng, d, 100.0) for _ in range(k)])
    queries = torch.from_numpy(rng.standard_normal((n, d))).to(dtype)
    gpu = mahalanobis(queries.cuda(), means, precisions)
    cpu = mahalanobis(queries, means, precisions)
    assert gpu.is_cuda and gpu.dtype == dtype and gpu.shape == (n, k)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    assert relative_error(gpu.cpu().numpy(), cpu.numpy()) < tolerance
    ae = ae_mahalanobis_scores(queries.cuda(), precisions)
    assert ae.is_cuda and relative_error(ae.cpu().numpy(), ae_mahalanobis_scores(queries, precisions).numpy()) < tolerance
