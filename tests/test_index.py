"""asdx.index.Bank against scikit-learn brute-force nearest neighbours."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import NearestNeighbors

from asdx.index import Bank, faiss_gpu_available


def sklearn_neighbours(bank, queries, k, metric):
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean" if metric == "l2" else "cosine")
    nn.fit(bank.astype(np.float64))
    return nn.kneighbors(queries.astype(np.float64))


def assert_same_neighbours(distances, indices, expected_d, expected_i, tol):
    """expected_* may hold one neighbour more than was searched: ties at the k-th place count too."""
    k = distances.shape[1]
    np.testing.assert_allclose(distances, expected_d[:, :k], rtol=1e-4, atol=tol)
    # Ties aside: where two candidates are closer than the float32 tolerance the order may differ.
    after = np.diff(expected_d, axis=1, append=np.inf)[:, :k]
    before = np.diff(expected_d, axis=1, prepend=-np.inf)[:, :k]
    clear = (after > tol) & (before > tol)
    np.testing.assert_array_equal(indices[clear], expected_i[:, :k][clear])


@settings(max_examples=30, deadline=None)
@given(
    n_bank=st.integers(1, 60),
    n_queries=st.integers(0, 20),
    dim=st.integers(1, 40),
    k=st.integers(1, 5),
    metric=st.sampled_from(["l2", "cosine"]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_search_matches_sklearn(n_bank, n_queries, dim, k, metric, scale, seed):
    k = min(k, n_bank)
    rng = np.random.default_rng(seed)
    bank = (rng.standard_normal((n_bank, dim)) * scale).astype(np.float32)
    queries = (rng.standard_normal((n_queries, dim)) * scale).astype(np.float32)
    result = Bank(bank, metric=metric).search(queries, k)
    assert result.distances.shape == (n_queries, k) and result.indices.shape == (n_queries, k)
    if n_queries == 0:
        return
    expected_d, expected_i = sklearn_neighbours(bank, queries, min(k + 1, n_bank), metric)
    tol = 1e-3 * scale if metric == "l2" else 1e-5
    assert_same_neighbours(result.distances, result.indices, expected_d, expected_i, tol)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_leave_one_out_excludes_self(metric):
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((50, 8)).astype(np.float32)
    loo = Bank(bank, metric=metric).leave_one_out(bank, k=3)
    assert not np.any(loo.indices == np.arange(50)[:, None])
    for i in (0, 21, 49):
        others = np.delete(bank, i, axis=0)
        d, idx = sklearn_neighbours(others, bank[i : i + 1], 3, metric)
        idx = np.where(idx >= i, idx + 1, idx)
        np.testing.assert_allclose(loo.distances[i], d[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(loo.indices[i], idx[0])


def test_leave_one_out_with_duplicates_keeps_the_twin():
    bank = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]], np.float32)
    loo = Bank(bank).leave_one_out(bank, k=1)
    np.testing.assert_allclose(loo.distances[:2, 0], 0.0, atol=1e-6)
    assert set(loo.indices[:2, 0]) == {0, 1}
    assert loo.indices[2, 0] in (0, 1)


def test_torch_in_torch_out():
    bank = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    result = Bank(bank).search(bank[:3], 2)
    assert isinstance(result.distances, torch.Tensor) and isinstance(result.indices, torch.Tensor)
    np.testing.assert_allclose(result.distances[:, 0].numpy(), 0.0, atol=1e-3)


def test_bad_input():
    bank = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="metric"):
        Bank(bank, metric="manhattan")
    with pytest.raises(ValueError, match="vectors"):
        Bank(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="queries: dimension 4"):
        Bank(bank).search(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="k: must be"):
        Bank(bank).search(np.zeros((2, 3)), k=6)
    with pytest.raises(ValueError, match="queries: contains NaN"):
        Bank(bank).search(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="leave-one-out"):
        Bank(bank).leave_one_out(bank, k=5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not faiss_gpu_available(), reason="needs faiss-gpu and a GPU")
def test_gpu_bank_matches_cpu():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((500, 32)).astype(np.float32)
    queries = rng.standard_normal((50, 32)).astype(np.float32)
    cpu = Bank(bank).search(queries, 4)
    gpu = Bank(torch.from_numpy(bank).cuda())
    assert gpu.on_gpu
    result = gpu.search(torch.from_numpy(queries).cuda(), 4)
    np.testing.assert_allclose(result.distances.cpu().numpy(), cpu.distances, rtol=1e-4, atol=1e-4)
