"""Shared test helpers: the golden fixtures folder and GPU availability."""

from __future__ import annotations

import os
from pathlib import Path

import asdx  # noqa: F401  first, before torch: its OpenMP threads then sleep while they wait (asdx._threads)
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


SYNTH_SIZES = {"n_source": 20, "n_target": 4, "n_test": 8, "samples": 16000}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: thread hand-offs cost more than they save on 2 busy cores (use with pytestmark)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
