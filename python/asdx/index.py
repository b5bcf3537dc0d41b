"""Exact nearest-neighbour banks of normal embeddings, on FAISS.

A Bank holds the normal training embeddings of one domain. Bank-based
scorers need two things from it: k-nearest distances for new clips, and
leave-one-out distances for the bank's own members, so that train-normal
clip scores (for the gamma threshold) are not all zero.

FAISS comes from exactly one of the extras `asdx[cpu]` (faiss-cpu) or
`asdx[gpu]` (faiss-gpu): both provide the module `faiss`. A GPU index is used
when faiss has GPU support and the bank is given as a CUDA tensor (or
device="cuda"); otherwise the CPU index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asdx._arrays import Prepared, prepare

METRICS = ("l2", "cosine")


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "asdx.index needs FAISS: install exactly one of `pip install 'asdx[cpu]'` (faiss-cpu) "
            "or `pip install 'asdx[gpu]'` (faiss-gpu); never both."
        ) from error
    return faiss


def faiss_gpu_available() -> bool:
    faiss = _import_faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass(frozen=True)
class Neighbours:
    """distances (N, k) float64 — Euclidean for "l2", 1 - cosine similarity for "cosine" —
    and indices (N, k) int64 into the bank, nearest first."""

    distances: np.ndarray | torch.Tensor
    indices: np.ndarray | torch.Tensor


class Bank:
    """An exact (flat) FAISS index over normal embeddings, searched with L2 or cosine distance."""

    def __init__(self, vectors, metric: str = "l2", device: str | None = None):
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}.")
        faiss = _import_faiss()
        bank = prepare(vectors, "vectors", ndim=2, dtype=np.float32, allow_empty=False)
        self.metric = metric
        self.dim = bank.shape[1]
        self.size = bank.shape[0]
        wants_gpu = device == "cuda" or (device is None and bank.on_cuda)
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"device: expected None, 'cpu' or 'cuda', got {device!r}.")
        if device == "cuda" and not faiss_gpu_available():
            raise RuntimeError("device='cuda' but faiss has no GPU support here: install asdx[gpu] on a GPU machine.")
        self.on_gpu = wants_gpu and faiss_gpu_available()
        cpu_index = faiss.IndexFlatIP(self.dim) if metric == "cosine" else faiss.IndexFlatL2(self.dim)
        if self.on_gpu:
            self._resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), cpu_index)
        else:
            self._index = cpu_index
        self._index.add(self._normalised(bank.numpy()))

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
        raw, indices = self._index.search(host, k)
        return self._to_distance(raw), indices.astype(np.int64)

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


def _like(result: Neighbours, reference: Prepared) -> Neighbours:
    if not reference.is_torch:
        return result
    device = reference.data.device
    return Neighbours(torch.from_numpy(result.distances).to(device), torch.from_numpy(result.indices).to(device))


__all__ = ["Bank", "METRICS", "Neighbours", "faiss_gpu_available"]
