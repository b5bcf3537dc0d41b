"""Exact nearest-neighbour banks of normal embeddings: blocked GEMM on the CPU, FAISS on the GPU.

A Bank holds the normal training embeddings of one domain. Bank-based
scorers need two things from it: k-nearest distances for new clips, and
leave-one-out distances for the bank's own members, so that train-normal
clip scores (for the gamma threshold) are not all zero.

CPU banks search in NumPy, in tiles of a few MB: one float32 matrix product
per (query block x bank block), the k smallest ranking scores kept across the
bank's blocks. They need no FAISS. Why not faiss-cpu: its wheels bundle their
own OpenBLAS (0.3.15 in faiss-cpu 1.15.1), which runs its generic SSE3
(Prescott) kernel on AVX-512 Xeons: on one, IndexFlatL2 took 827 ms for 2k
queries against 10k x 768, this search 138 ms and scikit-learn's brute force
305 ms (2 threads; benchmarks/bench_scoring.py, kNN rows). Why NumPy rather
than torch.mm: on that host the same tiled search was 15-30% faster on
NumPy's OpenBLAS than on torch's MKL in four interleaved runs (2 threads;
equal on one), and NumPy's BLAS is the same OpenBLAS build (scipy-openblas)
as the one scikit-learn's brute force runs on (SciPy's), on any CPU. It runs
with asdx's thread count (torch.get_num_threads(), set by
asdx.set_num_threads / --threads), applied per call through threadpoolctl.

GPU banks use a FAISS GPU flat index, from the extra `asdx[gpu]` (faiss-gpu),
when the bank is given as a CUDA tensor (or device="cuda") and faiss sees a GPU.

Precision. "l2" ranks members by ||b - m||^2 - 2 (q - m).(b - m) in float32, m
the bank mean: the shift is exact for L2 distances and removes the common
offset of real embedding banks (a tight cloud far from the origin), which the
expansion would otherwise cancel catastrophically (without it, 768-d vectors
offset by 1000 got the nearest member wrong for every query). "cosine" ranks
by the float32 dot product of the unit vectors. The distances of the k kept
are then computed directly in float64 from the float32 vectors (||q - b||, or
1 - q.b of the unit vectors): exact to float64 rounding, 0 for duplicates, and
a function of the query and the member alone, not of the rest of the bank.
Which members are kept can differ from exact arithmetic only among members
whose squared distances differ by less than ~1e-6 (||q - m||^2 + ||b - m||^2)
(for cosine, distances within ~1e-6).

Ties: the k returned are sorted by distance, equal distances by bank index.
For k = 1 the lowest-index member among those of equal ranking score is
returned; for k > 1, which of several members tied at the k-th place are
returned is unspecified (np.argpartition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from asdx._arrays import Prepared, prepare

METRICS = ("l2", "cosine")
TILE_BYTES = 8 << 20  # the float32 (query block x bank block) tile of one matrix product


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "A GPU bank needs FAISS with GPU support: `pip install 'asdx[gpu]'` (faiss-gpu). "
            "CPU banks need no FAISS."
        ) from error
    return faiss


def faiss_gpu_available() -> bool:
    """Whether faiss imports with GPU support and sees a GPU (False without faiss at all)."""
    try:
        faiss = _import_faiss()
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass(frozen=True)
class Neighbours:
    """distances (N, k) float64 — Euclidean for "l2", 1 - cosine similarity for "cosine" —
    and indices (N, k) int64 into the bank, nearest first."""

    distances: np.ndarray | torch.Tensor
    indices: np.ndarray | torch.Tensor


class Bank:
    """An exact (flat) index over normal embeddings, searched with L2 or cosine distance."""

    def __init__(self, vectors, metric: str = "l2", device: str | None = None):
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}.")
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"device: expected None, 'cpu' or 'cuda', got {device!r}.")
        bank = prepare(vectors, "vectors", ndim=2, dtype=np.float32, allow_empty=False)
        self.metric = metric
        self.dim = bank.shape[1]
        self.size = bank.shape[0]
        if device == "cuda" and not faiss_gpu_available():
            _import_faiss()  # without faiss: the ImportError that says what to install
            raise RuntimeError("device='cuda' but faiss has no GPU support here: install asdx[gpu] on a GPU machine.")
        self.on_gpu = (device == "cuda" or (device is None and bank.on_cuda)) and faiss_gpu_available()
        host = self._normalised(bank.numpy())
        if self.on_gpu:
            faiss = _import_faiss()
            cpu_index = faiss.IndexFlatIP(self.dim) if metric == "cosine" else faiss.IndexFlatL2(self.dim)
            self._resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), cpu_index)
            self._index.add(host)
            return
        # CPU: the vectors (a copy: the caller may reuse the array; distances of the k kept come from these)
        # and those the GEMM ranks with: for "l2" centred on the bank mean (see the module docstring), with
        # their squared norms, computed once.
        self._vectors = host.copy()
        self._mean = host.mean(axis=0, dtype=np.float64).astype(np.float32) if metric == "l2" else None
        self._ranked = host - self._mean if metric == "l2" else host
        self._sq_norms = np.einsum("ij,ij->i", self._ranked, self._ranked) if metric == "l2" else None

    def _normalised(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.maximum(norms, np.finfo(np.float32).tiny)
        return x

    def _to_distance(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.float64)
        if self.metric == "cosine":
            return 1.0 - raw
        return np.sqrt(np.maximum(raw, 0.0))

    def _query(self, queries: Prepared, k: int) -> tuple[np.ndarray, np.ndarray]:
        host = self._normalised(queries.numpy())
        if host.shape[0] == 0:
            return np.zeros((0, k)), np.zeros((0, k), dtype=np.int64)
        if not self.on_gpu:
            # ~0.3 ms per call; it also reaches BLAS libraries loaded since the last call
            with threadpool_limits(limits=max(1, torch.get_num_threads()), user_api="blas"):
                return self._cpu_query(host, k)
        raw, indices = self._index.search(host, k)
        return self._to_distance(raw), indices.astype(np.int64)

    def _cpu_query(self, host: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search in (query block x bank block) tiles of ~TILE_BYTES: one GEMM per tile, a ranking
        score per member (smaller is nearer), the k smallest kept across the bank's blocks.

        The bank is blocked too, not only the queries: BLAS packs each operand of every product, so thin
        query blocks against the whole bank re-pack the bank each time (10k x 768 bank, 8 MB tiles: 300 ms
        in 209-query blocks, 250 ms in 1448 x 1448 tiles, 235 ms in one 80 MB product; one thread).
        """
        n = host.shape[0]
        distances = np.empty((n, k))
        indices = np.empty((n, k), dtype=np.int64)
        side = max(1, math.isqrt(TILE_BYTES // 4))
        rows = max(1, min(side, TILE_BYTES // (8 * k * self.dim)))  # also bounds the (rows, k, dim) float64 below
        tile = np.empty((min(rows, n), min(side, self.size)), dtype=np.float32)
        for start in range(0, n, rows):
            q = host[start:start + rows]
            # (rows, dim) such that score = ranking_q @ bank block.T is -2 (q - m).(b - m), or -cos for "cosine"
            ranking_q = (q - self._mean) * np.float32(-2.0) if self.metric == "l2" else -q
            kept_score = kept = None
            for first in range(0, self.size, side):
                block = self._ranked[first:first + side]
                score = np.matmul(ranking_q, block.T, out=tile[:len(q), :len(block)])
                if self.metric == "l2":
                    score += self._sq_norms[first:first + side]  # ||q - m||^2 would not change the ranking
                chosen = _smallest(score, min(k, len(block)))
                chosen_score = np.take_along_axis(score, chosen, axis=1)
                chosen += first
                if kept is not None:  # earlier blocks first: their members win ties (np.argmin: the first)
                    chosen_score = np.concatenate([kept_score, chosen_score], axis=1)
                    chosen = np.concatenate([kept, chosen], axis=1)
                    best = _smallest(chosen_score, k)
                    chosen_score, chosen = (np.take_along_axis(a, best, axis=1) for a in (chosen_score, chosen))
                kept_score, kept = chosen_score, chosen
            # the distances of the k kept, directly in float64: no cancellation, and a function of the query
            # and the member alone (not of the rest of the bank, as the mean and the GEMM's blocking are)
            near, q64 = self._vectors[kept].astype(np.float64), q.astype(np.float64)
            if self.metric == "l2":
                diff = near - q64[:, None, :]
                value = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
            else:
                value = 1.0 - np.einsum("ijk,ik->ij", near, q64)
            order = np.lexsort((kept, value), axis=1)  # by distance, then by index
            distances[start:start + rows] = np.take_along_axis(value, order, axis=1)
            indices[start:start + rows] = np.take_along_axis(kept, order, axis=1)
        return distances, indices

    def search(self, queries, k: int = 1) -> Neighbours:
        """The k nearest bank members of each query."""
        if not 1 <= k <= self.size:
            raise ValueError(f"k: must be in [1, bank size {self.size}], got {k}.")
        q = prepare(queries, "queries", ndim=2, dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries: dimension {q.shape[1]} does not match the bank's {self.dim}.")
        distances, indices = self._query(q, k)
        return _like(Neighbours(distances, indices), q)

    def leave_one_out(self, vectors, k: int = 1) -> Neighbours:
        """For the bank's own members (given again, in bank order): k nearest among the others.

        Searches k + 1 and drops each member's own entry (or, with exact duplicates
        where the own entry was not returned, the farthest of the k + 1).
        """
        if not 1 <= k < self.size:
            raise ValueError(f"k: leave-one-out needs 1 <= k < bank size {self.size}, got {k}.")
        members = prepare(vectors, "vectors", ndim=2, dtype=np.float32)
        if members.shape[0] != self.size or members.shape[1] != self.dim:
            raise ValueError(f"vectors: expected the bank's own {self.size} x {self.dim} members, got {members.shape}.")
        distances, indices = self._query(members, k + 1)
        own = indices == np.arange(self.size)[:, None]
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(self.size), drop] = False
        return _like(Neighbours(distances[keep].reshape(self.size, k), indices[keep].reshape(self.size, k)), members)


def _smallest(score: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest of each row, in no particular order (k = 1: the first smallest)."""
    if k == 1:
        return score.argmin(axis=1)[:, None]
    if k < score.shape[1]:
        return np.argpartition(score, k - 1, axis=1)[:, :k]
    return np.broadcast_to(np.arange(score.shape[1]), score.shape).copy()


def _like(result: Neighbours, reference: Prepared) -> Neighbours:
    if not reference.is_torch:
        return result
    device = reference.data.device
    return Neighbours(torch.from_numpy(result.distances).to(device), torch.from_numpy(result.indices).to(device))


__all__ = ["Bank", "METRICS", "Neighbours", "faiss_gpu_available"]
