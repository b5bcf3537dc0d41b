"""CUDA kernels against the CPU kernels on the same input, where the CUDA plumbing can go wrong.

Streams (a side stream that is busy when the call is made), a second device, clip
lengths from one sample to 16 s, odd batch sizes and odd frame counts (the kernels
pack two real frames into one complex FFT, so an odd count leaves a lone last frame),
the float32 FFT path, the constant-table cache, the shared-memory limit and the
device-side finiteness check. Skipped without a GPU and asdx built with CUDA kernels.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest
import torch

import asdx.reference as reference
from asdx.features import kaldi_fbank, logmel_dcase, stereo_features
from asdx.scoring import fit_gamma_batch, gmm_diag_loglik, mahalanobis
from conftest import requires_cuda, signal_batch

pytestmark = [pytest.mark.gpu, requires_cuda]

needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA device (cuda:1)")

FRONTEND_ATOL = 1e-4  # CUDA vs CPU, both with the float64 FFT (as tests/test_features_cuda.py)
DB_SPAN = 80.0  # the float32 path is held to 0.01 on bands within this many dB of their frame's peak
LN_SPAN = DB_SPAN * math.log(10.0) / 10.0  # the same span in kaldi_fbank's natural-log units
STEREO_LOGMELS = [0, 1, 5, 6]  # near, far, mid, side log-mel bands


# --------------------------------------------------------------------------- helpers


def frontends(x, **kwargs) -> dict[str, object]:
    """All three frontends of one (batch, 2, samples) batch, flattened to named arrays or tensors."""
    stereo = stereo_features(x, **kwargs)
    return {"logmel": logmel_dcase(x, **kwargs), "kaldi": kaldi_fbank(x, **kwargs),
            "bands": stereo.bands, "ipd": stereo.ipd, "gcc": stereo.gcc}


def scoring_problem(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k, d = 3, 24
    a = rng.standard_normal((k, d, d))
    return {
        "queries": rng.standard_normal((257, d)),
        "means": rng.standard_normal((k, d)),
        "precisions": a @ a.transpose(0, 2, 1) / d + np.eye(d),
        "weights": rng.dirichlet(np.ones(k)),
        "variances": rng.uniform(0.2, 3.0, (k, d)),
        "scores": rng.gamma(2.0, size=(5, 300)) + 1.0,
    }


def scoring(problem: dict, queries, scores) -> dict[str, object]:
    """mahalanobis, gmm_diag_loglik and fit_gamma_batch of `queries` and `scores` (numpy or CUDA tensors)."""
    fit = fit_gamma_batch(scores)
    return {"mahalanobis": mahalanobis(queries, problem["means"], problem["precisions"]),
            "gmm": gmm_diag_loglik(queries, problem["weights"], problem["means"], problem["variances"]),
            "gamma_shape": fit.shape, "gamma_loc": fit.loc, "gamma_scale": fit.scale,
            "gamma_loglik": fit.loglik, "gamma_status": fit.status}


def to_numpy(value) -> np.ndarray:
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def assert_frontends_match(gpu: dict, cpu: dict, device: torch.device | None = None) -> None:
    for name, expected in cpu.items():
        got = gpu[name]
        assert isinstance(got, torch.Tensor) and got.is_cuda, name
        if device is not None:
            assert got.device == device, name
        got = to_numpy(got)
        assert got.shape == expected.shape, name
        if name == "gcc":  # lags agree where the peak is clear; heights everywhere
            np.testing.assert_allclose(got[..., 1], expected[..., 1], rtol=0, atol=FRONTEND_ATOL, err_msg=name)
            clear = expected[..., 1] > 0.05
            np.testing.assert_array_equal(got[..., 0][clear], expected[..., 0][clear], err_msg=name)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=FRONTEND_ATOL, err_msg=name)


def assert_scoring_matches(gpu: dict, cpu: dict, device: torch.device | None = None) -> None:
    for name, expected in cpu.items():
        got = gpu[name]
        assert isinstance(got, torch.Tensor) and got.is_cuda, name
        if device is not None:
            assert got.device == device, name
        got, expected = to_numpy(got), to_numpy(expected)
        if name == "gamma_status":
            np.testing.assert_array_equal(got, expected)
        else:  # tolerances of tests/test_mahalanobis.py, test_gmm.py and test_gamma.py (float64)
            rtol = 1e-6 if name.startswith("gamma") else 1e-10
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-9, err_msg=name)


@functools.lru_cache(maxsize=None)
def _cycles_per_ms() -> float:
    torch.cuda._sleep(1000)
    torch.cuda.synchronize()
    start = time.perf_counter()
    torch.cuda._sleep(10**7)
    torch.cuda.synchronize()
    return 1e7 / max((time.perf_counter() - start) * 1e3, 1e-3)


def hold_current_stream(ms: float) -> None:
    """Keeps the current stream busy for about `ms` milliseconds (torch.cuda._sleep spins in a kernel)."""
    if not hasattr(torch.cuda, "_sleep"):
        pytest.skip("this torch has no torch.cuda._sleep to keep a stream busy")
    torch.cuda._sleep(int(ms * _cycles_per_ms()))


# --------------------------------------------------------------------------- (1) a non-default stream


def test_every_kernel_runs_on_the_callers_side_stream():
    """The side stream is busy when each call is made and only then receives the input: a kernel
    launched on any other stream would read the zeros that were there before."""
    x = signal_batch("noise", 3, 2, 16544, seed=1)
    problem = scoring_problem()
    cpu_frontends = frontends(x)
    cpu_scoring = scoring(problem, problem["queries"], problem["scores"])

    sources = [torch.from_numpy(a).cuda() for a in (x, problem["queries"], problem["scores"])]
    targets = [torch.zeros_like(s) for s in sources]
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    assert side != torch.cuda.current_stream()
    with torch.cuda.stream(side):
        hold_current_stream(50)
        for source, target in zip(sources, targets):
            target.copy_(source)
        audio, queries, scores = targets
        gpu_frontends = frontends(audio)
        gpu_scoring = scoring(problem, queries, scores)
    side.synchronize()
    assert_frontends_match(gpu_frontends, cpu_frontends)
    assert_scoring_matches(gpu_scoring, cpu_scoring)


# --------------------------------------------------------------------------- (2) a second device


@needs_two_gpus
def test_every_kernel_runs_on_the_inputs_device_not_the_current_one():
    torch.cuda.set_device(0)
    device = torch.device("cuda:1")
    x = signal_batch("noise", 3, 2, 16544, seed=2)
    problem = scoring_problem(1)
    gpu_frontends = frontends(torch.from_numpy(x).to(device))
    gpu_scoring = scoring(problem, torch.from_numpy(problem["queries"]).to(device),
                          torch.from_numpy(problem["scores"]).to(device))
    assert torch.cuda.current_device() == 0
    torch.cuda.synchronize(device)
    assert_frontends_match(gpu_frontends, frontends(x), device)
    assert_scoring_matches(gpu_scoring, scoring(problem, problem["queries"], problem["scores"]), device)
    assert torch.cuda.current_device() == 0


# --------------------------------------------------------------------------- (3, 4) shapes


@pytest.mark.parametrize("length", [
    1,  # one sample: one centred log-mel frame, no Kaldi frame
    399,  # one sample short of a Kaldi frame: 0 frames
    400,  # exactly one Kaldi frame: a lone frame with no partner
    12345,  # odd length
    16 * 16000,  # 16 s
])
def test_clip_lengths(length):
    x = signal_batch("noise", 2, 2, length, seed=3, amplitude=0.8)
    gpu = frontends(torch.from_numpy(x).cuda())
    cpu = frontends(x)
    if length < 400:
        assert cpu["kaldi"].shape == (2, 2, 0, 128)
    assert_frontends_match(gpu, cpu)


@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("length", [
    16000,  # 32 log-mel frames, 98 Kaldi frames: all paired
    16544,  # 33 log-mel frames, 101 Kaldi frames: a lone last frame in each
])
def test_odd_batches_and_odd_frame_counts(batch, length):
    x = signal_batch("noise", batch, 2, length, seed=batch)
    gpu = frontends(torch.from_numpy(x).cuda())
    cpu = frontends(x)
    assert_frontends_match(gpu, cpu)
    # the last frame (lone when the count is odd) also against the float64 NumPy reference
    logmel, kaldi = to_numpy(gpu["logmel"]), to_numpy(gpu["kaldi"])
    np.testing.assert_allclose(logmel[..., -1, :], reference.logmel_dcase(x)[..., -1, :], rtol=0, atol=1e-3)
    np.testing.assert_allclose(kaldi[..., -1, :], reference.kaldi_fbank(x)[..., -1, :], rtol=0, atol=1e-3)


# --------------------------------------------------------------------------- (5) the float32 FFT


def _within_span(got: np.ndarray, expected: np.ndarray, peak: np.ndarray, span: float) -> float:
    """max |got - expected| over the bands of `expected` within `span` of their frame's peak."""
    mask = expected >= peak - span
    assert mask.any()
    return float(np.abs(got - expected)[mask].max())


@pytest.mark.parametrize("kind", ["noise", "sine", "square", "impulse", "silence"])
def test_float32_fft_on_cuda_is_within_a_hundredth_of_the_float64_cpu(kind):
    x = signal_batch(kind, 3, 2, 16544, seed=4, amplitude=0.8)
    gpu = frontends(torch.from_numpy(x).cuda(), precision="float32")
    cpu = frontends(x)

    logmel = cpu["logmel"]
    assert _within_span(to_numpy(gpu["logmel"]), logmel, logmel.max(-1, keepdims=True), DB_SPAN) <= 0.01
    kaldi = cpu["kaldi"]
    assert _within_span(to_numpy(gpu["kaldi"]), kaldi, kaldi.max(-1, keepdims=True), LN_SPAN) <= 0.01
    # A stereo frame's peak is over its four log-mel channels: the side of two identical channels is
    # cancellation noise far below the near channel, not a band the float32 path is held to.
    bands = cpu["bands"][:, STEREO_LOGMELS]
    peak = bands.max(axis=(1, 3), keepdims=True)
    assert _within_span(to_numpy(gpu["bands"])[:, STEREO_LOGMELS], bands, peak, DB_SPAN) <= 0.01


# --------------------------------------------------------------------------- (6, 7) tables and limits


def test_constant_tables_are_cached_per_configuration():
    cuda = pytest.importorskip("asdx._cuda")
    x = torch.from_numpy(signal_batch("noise", 2, 1, 16000, seed=5)).cuda()
    # an n_fft / n_mels pair no other test uses, so the first call below is a new configuration
    config = {"n_fft": 2048, "hop_length": 512, "n_mels": 77}
    logmel_dcase(x)
    before = cuda.cached_table_count()
    if before >= getattr(cuda, "_TABLE_CACHE_SIZE", math.inf):
        pytest.skip("the table cache is full: a new configuration evicts one")
    logmel_dcase(x)
    assert cuda.cached_table_count() == before  # same configuration: reused
    logmel_dcase(x, **config)
    assert cuda.cached_table_count() == before + 1  # a new n_fft: one more table
    logmel_dcase(x, **config)
    assert cuda.cached_table_count() == before + 1
    np.testing.assert_allclose(logmel_dcase(x, **config).cpu().numpy(), logmel_dcase(x.cpu().numpy(), **config),
                               rtol=0, atol=FRONTEND_ATOL)


@pytest.mark.parametrize("call", [
    # 2 * 65536 * 8 bytes (float64) or * 4 bytes (float32) of FFT scratch, over the 227 KiB a block may use
    lambda x: logmel_dcase(x, n_fft=65536, hop_length=16384),
    lambda x: logmel_dcase(x, n_fft=65536, hop_length=16384, precision="float32"),
    lambda x: stereo_features(x, n_fft=65536, hop_length=16384),
    lambda x: kaldi_fbank(x, frame_length_ms=4096.0),  # 65536-sample frames, a 65536-point FFT
], ids=["logmel_float64", "logmel_float32", "stereo_float64", "kaldi_float64"])
def test_an_fft_too_large_for_shared_memory_raises(call):
    x = torch.from_numpy(signal_batch("noise", 1, 2, 70000, seed=6)).cuda()
    with pytest.raises(ValueError, match="shared memory"):
        call(x)
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- (8) the finiteness check


def _with_nan_in_clip_1(channels: int) -> tuple[np.ndarray, torch.Tensor]:
    x = signal_batch("noise", 3, channels, 16544, seed=7)
    gpu = torch.from_numpy(x).cuda()
    gpu[1, channels - 1, 1234] = float("nan")
    return x, gpu


@pytest.mark.parametrize("kernel", ["logmel_dcase", "kaldi_fbank", "stereo_features"])
def test_non_finite_cuda_clip_gives_nan_features_for_that_clip_only(kernel):
    fn = {"logmel_dcase": logmel_dcase, "kaldi_fbank": kaldi_fbank, "stereo_features": stereo_features}[kernel]
    x, gpu = _with_nan_in_clip_1(2)
    outputs = fn(gpu)  # check_finite=None: checked on the device, no exception
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    expected = fn(x[[0, 2]])
    expected = expected if isinstance(expected, tuple) else (expected,)
    for out, cpu in zip(outputs, expected):
        out = to_numpy(out)
        assert np.isnan(out[1]).all()
        assert np.isfinite(out[[0, 2]]).all()
        np.testing.assert_allclose(out[[0, 2]], cpu, rtol=0, atol=FRONTEND_ATOL)
    with pytest.raises(ValueError, match=r"batch index 1\b"):
        fn(gpu, check_finite=True)


@pytest.mark.parametrize("kernel", ["logmel_dcase", "kaldi_fbank", "stereo_features"])
def test_default_finite_check_does_not_wait_for_the_device(kernel):
    fn = {"logmel_dcase": logmel_dcase, "kaldi_fbank": kaldi_fbank, "stereo_features": stereo_features}[kernel]
    _, gpu = _with_nan_in_clip_1(2)
    fn(gpu)  # first call: builds and uploads the constant tables (a one-off, synchronised upload)
    torch.cuda.synchronize()
    # torch refuses its own synchronising calls (.cpu(), .item(), ...) in this mode
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # and a raw cudaStreamSynchronize / device sync in the kernels would make the call wait out a busy stream
    torch.cuda.synchronize()
    start = time.perf_counter()
    hold_current_stream(400)
    fn(gpu)
    returned_ms = (time.perf_counter() - start) * 1e3
    torch.cuda.synchronize()
    busy_ms = (time.perf_counter() - start) * 1e3
    assert returned_ms < 0.5 * busy_ms, f"the call returned after {returned_ms:.0f} ms of a {busy_ms:.0f} ms busy stream"
