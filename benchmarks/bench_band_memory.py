"""beam's memory search on the CPU: BandMemoryScorer (torch GEMM, fused offset, min) vs FAISS IndexFlatIP vs NumPy.

8 bands x 1,000 references x 768 dims, 200 queries, the VarMin-rescaled band scores: the issue's
size (DCASE: ~1,000 train clips per machine, BEATs' 768-d tokens, 8 frequency patches). FAISS
searches the augmented vectors [x; 1], [y; 2αb] per band (asdx.scoring.band_memory.augmented_vectors),
k = 1; the NumPy reference (asdx.reference.band_memory, direct loops) is timed on 20 queries and
scaled x 10. Every method is checked against the scorer before it is timed.

    PYTHONPATH=python python -m benchmarks.bench_band_memory [--threads 1] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time

import numpy as np
import torch

from asdx.reference import band_memory as ref
from asdx.scoring import BandMemoryScorer
from asdx.scoring.band_memory import augmented_vectors
from benchmarks._common import RESULTS, timeit_best


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    bands, refs, dim, n_queries = 8, 1000, 768, 200
    centres = rng.standard_normal((20, bands, dim)).astype(np.float32)
    memory = centres[rng.integers(0, 20, refs)] + 0.5 * rng.standard_normal((refs, bands, dim)).astype(np.float32)
    queries = centres[rng.integers(0, 20, n_queries)] + 0.6 * rng.standard_normal((n_queries, bands, dim)).astype(
        np.float32)
    start = time.perf_counter()
    scorer = BandMemoryScorer().fit(torch.from_numpy(memory))
    fit_ms = (time.perf_counter() - start) * 1e3
    query_t = torch.from_numpy(queries)
    expected = scorer.band_scores(query_t)[1]
    rows = [("BandMemoryScorer.band_scores (torch baddbmm + min, float32)",
             timeit_best(lambda: scorer.band_scores(query_t), args.repeat))]

    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
        offsets = scorer.alpha_[:, None] * scorer.density_.T
        indexes = []
        for f in range(bands):
            _, y = augmented_vectors(queries[:, f], scorer.memory_[f], offsets[f])
            index = faiss.IndexFlatIP(dim + 1)
            index.add(np.ascontiguousarray(y, dtype=np.float32))
            indexes.append(index)

        def faiss_search():
            out = np.zeros((n_queries, bands), dtype=np.float32)
            for f in range(bands):
                q, _ = augmented_vectors(unit(queries[:, f]), scorer.memory_[f][:1], offsets[f][:1])
                similarity, _ = indexes[f].search(np.ascontiguousarray(q, dtype=np.float32), 1)
                out[:, f] = 0.5 - 0.5 * similarity[:, 0]
            return out

        np.testing.assert_allclose(faiss_search(), expected, atol=1e-5)
        rows.append(("FAISS IndexFlatIP per band, augmented [x; 1]·[y; 2αb], k = 1", timeit_best(faiss_search,
                                                                                              args.repeat)))
    few = queries[:20].astype(np.float64)
    memory64 = scorer.memory_.transpose(1, 0, 2).astype(np.float64)
    reference = lambda: ref.band_scores(few, memory64, scorer.density_, scorer.alpha_)  # noqa: E731
    np.testing.assert_allclose(reference(), expected[:20], atol=1e-5)
    rows.append(("NumPy reference (direct loops, float64; 20 queries x 10)", timeit_best(reference, 1) * 10))

    load = os.getloadavg()
    base = rows[0][1]
    lines = [f"## bench_band_memory — {datetime.datetime.now().isoformat(timespec='seconds')}", "",
             f"- machine: {cpu_model()}; os.cpu_count() = {os.cpu_count()}; threads: torch {args.threads}, "
             f"faiss {args.threads if faiss else 'n/a'}",
             f"- load average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (a shared host: "
             "other sessions' work runs beside it)",
             f"- input: {bands} bands x {refs} references x {dim} dims, {n_queries} queries, VarMin-rescaled band "
             f"scores; best of {args.repeat} after a warm-up; fit (densities, alpha, leave-one-out scores of the "
             f"{refs} references) {fit_ms:.0f} ms", "",
             "| method | ms for 200 queries | / BandMemoryScorer |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.1f} | {ms / base:.2f}× |" for name, ms in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with open(RESULTS, "a") as handle:
            handle.write("\n" + text)
    return text


if __name__ == "__main__":
    main()
