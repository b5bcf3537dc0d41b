"""The CPU kernels' persistent thread pool (csrc/cpu/parallel.cpp): a forked child and
several Python threads at once get the same results as one serial caller. And torch's OpenMP
threads: `import asdx` makes them sleep while they wait (asdx._threads)."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import asdx
from asdx.scoring.gamma import fit_gamma_batch
from asdx.scoring.gmm import gmm_diag_loglik
from asdx.scoring.mahalanobis import mahalanobis

THREADS = 4  # more than this machine's cores is fine: the pool has as many workers as asked for

# Python >= 3.12 warns that forking a multi-threaded process may deadlock: that is what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def _inputs():
    rng = np.random.default_rng(11)
    d, k = 24, 3
    queries = rng.standard_normal((6000, d))
    means = rng.standard_normal((k, d))
    variances = rng.uniform(0.5, 2.0, (k, d))
    weights = np.array([0.2, 0.3, 0.5])
    a = rng.standard_normal((k, d, d))
    precisions = np.einsum("kij,klj->kil", a, a) + d * np.eye(d)
    sets = [rng.gamma(2.0, 1.5, size) + 1.0 for size in rng.integers(20, 400, 300)]
    return queries, weights, means, variances, precisions, sets


def _run_kernels(inputs) -> list[np.ndarray]:
    queries, weights, means, variances, precisions, sets = inputs
    fit = fit_gamma_batch(sets)
    return [
        np.asarray(gmm_diag_loglik(queries, weights, means, variances)),
        np.asarray(gmm_diag_loglik(queries.astype(np.float32), weights, means.astype(np.float32),
                                   variances.astype(np.float32))),
        np.asarray(mahalanobis(queries, means, precisions)),
        np.asarray(fit.shape), np.asarray(fit.loc), np.asarray(fit.scale), np.asarray(fit.status),
    ]


def _assert_same(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)


@pytest.fixture
def pool_threads():
    if asdx.get_kernels() == "torch":
        pytest.skip("tests the native CPU kernels' thread pool (csrc/cpu/parallel.cpp), which ASDX_KERNELS=torch "
                    "does not use")
    before = asdx.get_num_threads()
    asdx.set_num_threads(THREADS)
    yield THREADS
    asdx.set_num_threads(before)


def _child(inputs, results) -> None:
    try:
        results.put(("ok", asdx.get_num_threads(), _run_kernels(inputs)))
    except BaseException as error:  # report, do not hang the parent
        results.put(("error", 0, repr(error)))


def _run_in_forked_child(inputs, timeout: float = 120.0):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child, args=(inputs, results))
    child.start()
    try:
        status, threads, payload = results.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"the forked child gave no result within {timeout} s (a deadlocked thread pool?)")
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
    assert status == "ok", payload
    return threads, payload


def test_kernels_work_in_a_forked_child_after_the_parent_used_the_pool(pool_threads):
    inputs = _inputs()
    expected = _run_kernels(inputs)  # starts the parent's workers
    threads, actual = _run_in_forked_child(inputs)
    assert threads == pool_threads  # the child really runs multi-threaded chunks
    _assert_same(actual, expected)
    _assert_same(_run_kernels(inputs), expected)  # and the parent's pool still works


def test_fork_while_another_thread_is_inside_a_kernel(pool_threads):
    # The fork may land while the parent's pool is mid-job, its locks held by threads the child does not have.
    inputs = _inputs()
    expected = _run_kernels(inputs)
    stop = threading.Event()
    errors = []

    def busy():
        try:
            while not stop.is_set():
                _assert_same(_run_kernels(inputs), expected)
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        for _ in range(3):
            _, actual = _run_in_forked_child(inputs)
            _assert_same(actual, expected)
    finally:
        stop.set()
        worker.join()
    assert not errors, errors


def test_concurrent_callers_get_the_serial_results(pool_threads):
    inputs = _inputs()
    expected = _run_kernels(inputs)  # one caller at a time
    n_callers, rounds = 4, 5
    barrier = threading.Barrier(n_callers)
    results: dict[int, list] = {}
    errors = []

    def caller(index: int) -> None:
        try:
            barrier.wait()
            results[index] = [_run_kernels(inputs) for _ in range(rounds)]
        except BaseException as error:
            errors.append(error)

    callers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(n_callers)]
    for t in callers:
        t.start()
    deadline = time.monotonic() + 120.0
    for t in callers:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in callers), "a caller is still running (deadlock?)"
    assert not errors, errors
    assert sorted(results) == list(range(n_callers))
    for per_caller in results.values():
        for actual in per_caller:
            _assert_same(actual, expected)


def test_thread_count_does_not_change_the_results(pool_threads):
    inputs = _inputs()
    parallel = _run_kernels(inputs)
    asdx.set_num_threads(1)
    serial = _run_kernels(inputs)
    # Each row / set is computed by the same code whatever the chunking; only the
    # float32 GMM's vector tiles may pair rows differently at chunk edges.
    for a, e in zip(parallel, serial):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- OpenMP wait policy (asdx._threads)

def _python(code: str, **env_changes) -> subprocess.CompletedProcess:
    """A fresh interpreter: the wait policy is decided when torch's OpenMP library loads, once per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)


def _gomp_spincount(stderr: str) -> str:
    """libgomp's effective spin count, as OMP_DISPLAY_ENV=VERBOSE prints it when torch loads it."""
    for line in stderr.splitlines():
        if "GOMP_SPINCOUNT" in line:
            return line.split("=", 1)[1].strip().strip("'")
    pytest.skip("torch's OpenMP runtime is not libgomp here (no GOMP_SPINCOUNT in OMP_DISPLAY_ENV)")


def test_import_asdx_first_makes_openmp_threads_sleep_while_they_wait():
    done = _python("import asdx, torch, os; print(os.environ['OMP_WAIT_POLICY']); "
                   "print(asdx.info()['omp_wait_policy'])", OMP_DISPLAY_ENV="VERBOSE")
    policy, described = done.stdout.splitlines()
    assert policy == "PASSIVE" and described == "PASSIVE (set by asdx)"
    assert _gomp_spincount(done.stderr) == "0"     # passive: no spinning at all


def test_a_policy_the_user_set_is_kept():
    done = _python("import asdx, os; print(os.environ['OMP_WAIT_POLICY']); print(asdx.info()['omp_wait_policy'])",
                   OMP_WAIT_POLICY="ACTIVE")
    assert done.stdout.splitlines() == ["ACTIVE", "ACTIVE (from the environment)"]


def test_torch_imported_before_asdx_is_reported_as_too_late():
    done = _python("import torch, asdx; print(asdx.info()['omp_wait_policy'])", OMP_DISPLAY_ENV="VERBOSE")
    assert done.stdout.startswith("OpenMP's default (spinning): torch was imported before asdx")
    assert _gomp_spincount(done.stderr) != "0"     # what the message says: it still spins


def test_the_command_line_runs_with_the_passive_policy():
    done = _python("import sys; from asdx.cli import main; sys.exit(main(['info', '--json']))")
    assert json.loads(done.stdout)["omp_wait_policy"] == "PASSIVE (set by asdx)"


def test_the_test_suite_itself_loads_torch_after_asdx():
    """tests/conftest.py imports asdx before torch: the suite on a busy CI host does not spin either."""
    assert not asdx.info()["omp_wait_policy"].startswith("OpenMP's default")


# ----------------------------------------------------------------------------- chunking (asdx._C.testing)

CHUNKS_PER_THREAD = 8  # csrc/cpu/parallel.h, detail::kChunksPerThread


def _testing():
    from asdx._native import _C
    return _C.testing


def _assert_cover(chunks, n):
    """The chunks, sorted, tile [0, n) once."""
    spans = sorted(chunks)
    assert spans and spans[0][0] == 0 and spans[-1][1] == n
    assert all(b < e for b, e in spans)
    assert all(e == b2 for (_, e), (b2, _) in zip(spans[:-1], spans[1:]))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n, min_chunk", [(1, 1), (5, 16), (17, 16), (100, 1), (1000, 16), (12345, 7), (40, 16)])
def test_parallel_for_chunks_tile_the_range(pool_threads, threads, n, min_chunk):
    asdx.set_num_threads(threads)
    chunks, error = _testing().parallel_chunks(n, min_chunk)
    assert error == ""
    _assert_cover(chunks, n)
    most = max(1, n // min_chunk)
    if threads == 1 or most == 1:
        assert chunks == [(0, n)]  # no split: one call on the caller's thread
        return
    assert all(e - b >= min_chunk for b, e in chunks)
    # Several chunks per thread, handed out on demand, so a thread held up by another process leaves its share.
    assert len(chunks) == min(most, threads * CHUNKS_PER_THREAD)
    sizes = [e - b for b, e in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_parallel_for_rethrows_the_lowest_chunks_error_after_running_every_chunk(pool_threads):
    n = 1000
    chunks, error = _testing().parallel_chunks(n, 1, throw_from=n // 2)
    _assert_cover(chunks, n)  # the chunks after a failed one still ran
    first_failed = min(b for b, _ in chunks if b >= n // 2)
    assert error == f"chunk at {first_failed}"


def test_nested_parallel_for_runs_inline_and_covers_its_range(pool_threads):
    chunks, error = _testing().parallel_chunks(1000, 1, nested=True)
    assert error == ""
    _assert_cover(chunks, 1000)


def test_parallel_for_weighted_chunks_balance_the_cost(pool_threads):
    sizes = np.array([10] * 30 + [5000] + [10] * 30)  # one heavy item among light ones
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    chunks = _testing().parallel_chunks_weighted(offsets, 0, 1)
    _assert_cover(chunks, len(sizes))
    assert (30, 31) in chunks  # the heavy item alone
    assert len(chunks) <= pool_threads * CHUNKS_PER_THREAD
    assert _testing().parallel_chunks_weighted(offsets, 0, 10**9) == [(0, len(sizes))]  # too cheap to split
