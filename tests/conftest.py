"""Shared test helpers: the golden fixtures folder, GPU availability, the CPU ISA paths, one thread for the suite."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import asdx  # first, before torch: its OpenMP threads then sleep while they wait (asdx._threads)
import numpy as np
import pytest
import torch
from hypothesis import settings

# CI must not turn red on a fresh random draw: examples are derived from each test's name
# (reproducible everywhere). Set ASDX_HYPOTHESIS_EXPLORE=1 to search with fresh randomness.
settings.register_profile("reproducible", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("explore" if os.environ.get("ASDX_HYPOTHESIS_EXPLORE") else "reproducible")

ROOT = Path(__file__).resolve().parents[1]
# Golden fixtures are vendored in tests/fixtures (see its README); $ASDX_FIXTURES points elsewhere.
FIXTURES = Path(os.environ.get("ASDX_FIXTURES") or Path(__file__).resolve().parent / "fixtures")


def fixture_path(name: str) -> Path:
    """Path of a golden fixture; skips the test (with the reason) when the folder is absent."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"golden fixture {path} not found (tests/fixtures is part of the repository; check $ASDX_FIXTURES)")
    return path


def cuda_available() -> bool:
    from asdx._native import cuda_kernels_compiled

    return torch.cuda.is_available() and cuda_kernels_compiled()


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU and asdx built with CUDA kernels")


def signal_batch(kind: str, batch: int, channels: int, length: int, seed: int = 0, amplitude: float = 0.5):
    """Deterministic test audio of several kinds, float32 (batch, channels, length)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    if kind == "noise":
        x = rng.standard_normal((batch, channels, length))
    elif kind == "silence":
        x = np.zeros((batch, channels, length))
    elif kind == "square":
        x = np.broadcast_to(np.sign(np.sin(2 * np.pi * 441.0 * t) + 1e-12), (batch, channels, length))
    elif kind == "sine":
        freqs = rng.uniform(50, 7900, size=(batch, channels, 1))
        x = np.sin(2 * np.pi * freqs * t)
    elif kind == "impulse":
        x = np.zeros((batch, channels, length))
        x[..., length // 2] = 1.0
    else:
        raise ValueError(kind)
    return (amplitude * x).astype(np.float32)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """One small synthetic DCASE 2026 set (all 12 machines) shared by the data tests."""
    from asdx.data import generate

    return generate(tmp_path_factory.mktemp("synth") / "data", seconds=1.0, n_source=20, n_target=4, n_test=8,
                    seed=3, progress=False)


@pytest.fixture(scope="session")
def diffuse_root(tmp_path_factory):
    """synth_root's sizes and seed on the earlier background (diffuse noise only, no interferers), where the near
    channel carries the machine: the tests whose AUC floors check that a near-channel system learns at all use it.
    On the default noisy hall the near channel is deliberately weak (the views' tests and views_study cover it)."""
    from asdx.data import generate

    return generate(tmp_path_factory.mktemp("synth_diffuse") / "data", seconds=1.0, n_source=20, n_target=4,
                    n_test=8, seed=3, progress=False, background="diffuse")


SYNTH_SIZES = {"n_source": 20, "n_target": 4, "n_test": 8, "samples": 16000}


@pytest.fixture(scope="session", autouse=True)
def one_thread_for_the_suite():
    """The suite runs with one torch thread and one kernel thread: the models and inputs are tiny, and on a
    busy 2-core machine thread hand-offs cost more than they save (test_runner's AE run: 266 s with two
    torch threads, 55 s with one). A test that needs more threads sets them itself and restores them."""
    before = torch.get_num_threads()
    asdx.set_num_threads(1)  # torch's intra-op pool and asdx's kernels: one knob (asdx._native)
    yield
    asdx.set_num_threads(before)


@pytest.fixture(autouse=True)
def threads_restored():
    """A test that changes the thread counts leaves them at one for the next test."""
    yield
    if torch.get_num_threads() != 1:
        asdx.set_num_threads(1)


def chance_auc_floor(n_normal: int, n_anomaly: int, n_aucs: int = 1, z: float = 2.33) -> float:
    """The mean of n_aucs independent AUCs of random scores (n_normal vs n_anomaly clips each) exceeds this
    with < 1 % probability (z = 2.33, one-sided, normal approximation): the Mann-Whitney null has mean 0.5 and
    sd sqrt((n1 + n2 + 1) / (12 n1 n2)) per AUC (no ties), and a mean of n_aucs has sd / sqrt(n_aucs). AUCs
    that share clips are not independent: count them as one."""
    sd = np.sqrt((n_normal + n_anomaly + 1) / (12.0 * n_normal * n_anomaly))
    return 0.5 + z * sd / np.sqrt(n_aucs)


# ------------------------------------------------------------------ ISA paths of the native CPU kernels

ISA_PATHS = ("avx512", "avx2", "baseline")


def isa_params() -> list:
    """ISA_PATHS as pytest parameters, each skipped (with the reason) where this CPU lacks it."""
    from asdx.kernels import cpu_isa_supported

    supported = cpu_isa_supported()
    return [pytest.param(path, id=path, marks=pytest.mark.skipif(path not in supported,
                                                                 reason=f"this CPU lacks the {path} path"))
            for path in ISA_PATHS]


@contextmanager
def native_isa(path: str):
    """Inside the block the public kernels run natively on the CPU ISA path `path` (ASDX_ISA, which the
    kernels read at each call, and asdx.set_kernels("native"), also under ASDX_KERNELS=torch); both are
    restored after. A context manager rather than monkeypatch, so that hypothesis tests can use it."""
    before = os.environ.get("ASDX_ISA")
    os.environ["ASDX_ISA"] = path
    asdx.set_kernels("native")
    try:
        yield
    finally:
        asdx.set_kernels(None)
        if before is None:
            os.environ.pop("ASDX_ISA", None)
        else:
            os.environ["ASDX_ISA"] = before
