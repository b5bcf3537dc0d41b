"""asdx.index.Bank on the CPU against the float64 NumPy reference (asdx.reference.knn),
on random and adversarial banks: duplicates, ties, constant and zero vectors, a large common
offset, k = bank size, one-row banks, several query blocks."""

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx import index
from asdx.index import Bank
from asdx.reference.knn import knn, knn_leave_one_out, pairwise_distances

KINDS = ["normal", "offset", "duplicates", "constant", "zeros", "grid"]


@st.composite
def problems(draw, min_bank=1):
    """(bank, queries, k, metric, tile_bytes): float32 data of one adversarial kind."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(KINDS))
    n_bank, dim = draw(st.integers(min_bank, 40)), draw(st.integers(1, 24))
    if kind == "normal":
        bank = rng.standard_normal((n_bank, dim)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    elif kind == "offset":  # a tight cloud far from the origin, as real embedding banks are
        bank = 1e3 + rng.standard_normal((n_bank, dim))
    elif kind == "duplicates":  # a few distinct rows, repeated: exact ties
        bank = rng.standard_normal((3, dim))[rng.integers(0, 3, n_bank)]
    elif kind == "constant":
        bank = np.full((n_bank, dim), draw(st.sampled_from([-2.5, 7.0, 1e4])))
    elif kind == "zeros":
        bank = np.zeros((n_bank, dim))
    else:  # small integer coordinates: many members at exactly equal distances
        bank = rng.integers(-2, 3, (n_bank, dim)).astype(np.float64)
    n_queries = draw(st.integers(1, 12))
    fresh = bank.mean(axis=0) + rng.standard_normal((n_queries, dim)) * (bank.std() + 1.0)
    copies = bank[rng.integers(0, n_bank, n_queries)]
    near = copies + rng.standard_normal((n_queries, dim)) * 1e-3
    source = draw(st.sampled_from(["fresh", "copies", "near", "mixed"]))
    queries = {"fresh": fresh, "copies": copies, "near": near,
               "mixed": np.where(rng.random((n_queries, 1)) < 0.5, fresh, copies)}[source]
    k = draw(st.integers(1, n_bank))
    metric = draw(st.sampled_from(["l2", "cosine"]))
    tile_bytes = draw(st.sampled_from([1, 300, 8 << 20]))  # 1: one query per block
    return bank.astype(np.float32), queries.astype(np.float32), k, metric, tile_bytes


def tolerances(bank, queries, metric):
    """(ranking, value): how far the ranking score and the returned distance may be from exact arithmetic.

    Ranking (float32 GEMM): l2 squared distances within ~1e-5 of the squared norms about the bank mean,
    cosine distances within 2e-5. Returned distances (float64 from the float32 vectors): l2 to float64
    rounding; cosine to float32 rounding (the unit vectors are float32).
    """
    if metric == "cosine":
        return 2e-5, 1e-6
    mean = bank.astype(np.float64).mean(axis=0)
    radius2 = (((queries - mean) ** 2).sum(axis=1).max() + ((bank - mean) ** 2).sum(axis=1).max())
    return 1e-5 * radius2 + 1e-30, 1e-12 * np.sqrt(radius2) + 1e-30


def check(result, all_distances, expected_d, expected_i, metric, ranking_tol, value_tol):
    """The returned neighbours against the reference: exact where the reference is clear, near-exact where close.

    all_distances: reference distances of every query to every member; expected_*: the reference's
    k (or k + 1, to see ties at the k-th place) nearest.
    """
    d, i = np.asarray(result.distances), np.asarray(result.indices)
    n, k = d.shape
    assert d.dtype == np.float64 and i.dtype == np.int64 and i.shape == (n, k)
    assert np.all((i >= 0) & (i < all_distances.shape[1]))
    assert all(len(set(row)) == k for row in i), "a member returned twice"
    # the distance returned is the distance to the member returned
    np.testing.assert_allclose(d, np.take_along_axis(all_distances, i, axis=1), rtol=1e-10, atol=value_tol)
    # nearest first; equal distances by index
    step_d, step_i = np.diff(d, axis=1), np.diff(i, axis=1)
    assert np.all((step_d > 0) | ((step_d == 0) & (step_i > 0))), "not sorted by (distance, index)"
    # no member returned when a clearly nearer one was left out: the j-th is within the ranking tolerance
    # of the exact j-th nearest
    key = (lambda x: x**2) if metric == "l2" else (lambda x: x)
    assert np.all(key(np.take_along_axis(all_distances, i, axis=1)) <= key(expected_d[:, :k]) + ranking_tol)
    # where the reference's j-th nearest is clear of its neighbours, the same member
    gaps = np.diff(key(expected_d), axis=1)
    after = np.concatenate([gaps, np.full((n, 1), np.inf)], axis=1)[:, :k]
    before = np.concatenate([np.full((n, 1), np.inf), gaps], axis=1)[:, :k]
    clear = (after > 2 * ranking_tol) & (before > 2 * ranking_tol)
    np.testing.assert_array_equal(i[clear], expected_i[:, :k][clear])


@settings(max_examples=150, deadline=None)
@given(problems())
def test_search_matches_reference(problem):
    bank, queries, k, metric, tile_bytes = problem
    with mock.patch.object(index, "TILE_BYTES", tile_bytes):
        result = Bank(bank, metric=metric).search(queries, k)
    expected_d, expected_i = knn(bank, queries, min(k + 1, len(bank)), metric)
    check(result, pairwise_distances(bank, queries, metric), expected_d, expected_i, metric,
          *tolerances(bank, queries, metric))


@settings(max_examples=100, deadline=None)
@given(problems(min_bank=2))
def test_leave_one_out_matches_reference(problem):
    bank, _, k, metric, tile_bytes = problem
    k = min(k, len(bank) - 1)
    with mock.patch.object(index, "TILE_BYTES", tile_bytes):
        result = Bank(bank, metric=metric).leave_one_out(bank, k)
    assert not np.any(np.asarray(result.indices) == np.arange(len(bank))[:, None]), "a member is its own neighbour"
    all_distances = pairwise_distances(bank, bank, metric)
    np.fill_diagonal(all_distances, np.inf)
    expected_d, expected_i = knn_leave_one_out(bank, min(k + 1, len(bank) - 1), metric)
    check(result, all_distances, expected_d, expected_i, metric, *tolerances(bank, bank, metric))


@pytest.mark.parametrize("tile_bytes", [1, 300, 8 << 20])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_k1_tie_goes_to_the_lowest_index(metric, tile_bytes):
    """Small integers with a zero mean: every ranking score is exact, so the tie rule is what decides."""
    pair = np.array([[3.0, 1.0], [-3.0, -1.0]], np.float32)
    bank = np.concatenate([np.eye(2, dtype=np.float32), -np.eye(2, dtype=np.float32)] + [pair] * 20)
    with mock.patch.object(index, "TILE_BYTES", tile_bytes):
        result = Bank(bank, metric=metric).search(pair, 1)
    np.testing.assert_array_equal(result.indices[:, 0], [4, 5])


def test_offset_bank_finds_the_exact_neighbours():
    """768-d embeddings in a tight cloud offset by 1000 from the origin: without centring on the bank
    mean, the float32 expansion ||q||^2 - 2 q.b + ||b||^2 gets no nearest member right here."""
    rng = np.random.default_rng(0)
    bank = (1e3 + rng.standard_normal((300, 768))).astype(np.float32)
    queries = (1e3 + rng.standard_normal((40, 768))).astype(np.float32)
    result = Bank(bank).search(queries, 3)
    expected_d, expected_i = knn(bank, queries, 3)
    np.testing.assert_array_equal(result.indices, expected_i)
    np.testing.assert_allclose(result.distances, expected_d, rtol=1e-10)


def test_bank_keeps_its_own_copy():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((10, 4)).astype(np.float32)
    queries = rng.standard_normal((5, 4)).astype(np.float32)
    for metric in ("l2", "cosine"):
        bank = Bank(vectors, metric=metric)
        before = bank.search(queries, 3)
        vectors_again = vectors.copy()
        vectors[:] = 0.0  # the caller reuses its array
        after = bank.search(queries, 3)
        np.testing.assert_array_equal(after.indices, before.indices)
        np.testing.assert_array_equal(after.distances, before.distances)
        vectors[:] = vectors_again


def test_duplicates_are_at_distance_zero():
    rng = np.random.default_rng(1)
    bank = (50.0 + rng.standard_normal((20, 16))).astype(np.float32)
    result = Bank(bank).search(bank[[3, 7]], 1)
    np.testing.assert_array_equal(result.indices[:, 0], [3, 7])
    np.testing.assert_array_equal(result.distances, 0.0)


def test_cpu_search_runs_blas_with_asdx_thread_count(monkeypatch):
    """NumPy's BLAS follows asdx's thread setting (torch's thread count) during a search, whatever its own default."""
    from threadpoolctl import threadpool_info

    seen = []
    search = Bank._cpu_query

    def spy(self, host, k):
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return search(self, host, k)

    monkeypatch.setattr(Bank, "_cpu_query", spy)
    bank = np.random.default_rng(2).standard_normal((30, 4)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            Bank(bank).search(bank, 1)
            assert seen[-1] == {threads}
    finally:
        torch.set_num_threads(before)
