"""stereo_features: against the NumPy reference and on signals whose cues are known."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx import reference
from asdx.features import BAND_CHANNELS, logmel_dcase, stereo_features
from conftest import signal_batch

DB_CHANNELS = [BAND_CHANNELS.index(name) for name in ("near_logmel", "far_logmel", "mid_logmel", "side_logmel")]


def assert_matches_reference(x, **kwargs):
    bands, ipd, gcc = stereo_features(x, **kwargs)
    ref_bands, ref_ipd, ref_gcc = reference.stereo_features(x, **kwargs)
    assert bands.shape == ref_bands.shape and ipd.shape == ref_ipd.shape and gcc.shape == ref_gcc.shape
    np.testing.assert_allclose(bands[:, DB_CHANNELS], ref_bands[:, DB_CHANNELS], rtol=0, atol=1e-3)
    np.testing.assert_allclose(bands[:, 2], ref_bands[:, 2], rtol=0, atol=1e-3)  # ILD, dB

    n_fft = kwargs.get("n_fft", 1024)
    hop = kwargs.get("hop_length", 512)
    spectra = reference.frontend.stft_centred(x, n_fft, hop)
    cross = spectra[:, 0] * np.conj(spectra[:, 1])
    bank = reference.slaney_mel_filterbank(16000, n_fft, kwargs.get("n_mels", 128)).T
    # A phase is only defined where the cross-spectrum is not a cancellation down to
    # rounding level; compare the phasors there.
    band_defined = np.abs(cross @ bank) > 1e-6 * (np.abs(cross) @ bank) + 1e-18
    for c in (3, 4):
        np.testing.assert_allclose(bands[:, c][band_defined], ref_bands[:, c][band_defined], rtol=0, atol=1e-4)
    bin_defined = np.abs(cross) > 1e-12 * np.abs(cross).max(axis=-1, keepdims=True) + 1e-18
    for c in (0, 1):
        np.testing.assert_allclose(ipd[:, c][bin_defined], ref_ipd[:, c][bin_defined], rtol=0, atol=1e-4)

    # The chosen lag must be (one of) the reference's best: near-ties may break either way.
    correlation = reference.gcc_phat_correlation(x, n_fft, hop)
    lags = gcc[..., 0].astype(int)
    at_chosen = np.take_along_axis(correlation, (lags % n_fft)[..., None], -1)[..., 0]
    np.testing.assert_allclose(at_chosen, ref_gcc[..., 1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(gcc[..., 1], ref_gcc[..., 1], rtol=0, atol=1e-5)
    max_lag = min(kwargs.get("max_lag", 320), n_fft // 2 - 1)
    assert np.all(np.abs(lags) <= max_lag)


stereo_batches = st.builds(
    signal_batch,
    kind=st.sampled_from(["noise", "silence", "square", "sine", "impulse"]),
    batch=st.integers(1, 3),
    channels=st.just(2),
    length=st.integers(1, 5000),
    seed=st.integers(0, 2**16),
    amplitude=st.sampled_from([1.0, 0.1, 1e-4]),
)


@settings(max_examples=25, deadline=None)
@given(stereo_batches)
def test_stereo_matches_reference(x):
    assert_matches_reference(x)


@pytest.mark.parametrize("kwargs", [dict(n_fft=512, hop_length=160, n_mels=64, max_lag=40), dict(max_lag=2000)])
def test_stereo_other_settings(kwargs):
    assert_matches_reference(signal_batch("noise", 2, 2, 6000, seed=4), **kwargs)


def test_near_and_far_logmel_equal_logmel_dcase():
    x = signal_batch("noise", 2, 2, 8000, seed=9)
    bands = stereo_features(x).bands
    np.testing.assert_allclose(bands[:, :2], logmel_dcase(x), rtol=0, atol=1e-4)


def delayed_pair(delay: int, length: int = 16000, seed: int = 0, far_gain: float = 0.5):
    """Near = white noise; far = the same noise delayed by `delay` samples (negative: leads)."""
    rng = np.random.default_rng(seed)
    source = rng.standard_normal(length + 2 * abs(delay))
    start = abs(delay)
    near = source[start : start + length]
    far = far_gain * source[start - delay : start - delay + length]
    return np.stack([near, far])[None].astype(np.float32)


@pytest.mark.parametrize("delay", [-150, -37, -5, -1, 1, 2, 13, 64, 300])
def test_gcc_phat_finds_the_delay(delay):
    gcc = stereo_features(delayed_pair(delay)).gcc[0]
    interior = gcc[2:-2]  # edge frames are mostly zero padding
    assert np.all(interior[:, 0] == delay)
    assert np.all(interior[:, 1] > 0.3)


def test_swapping_channels_flips_ild_and_itd():
    x = delayed_pair(23, far_gain=0.25)
    swapped = x[:, ::-1].copy()
    a, b = stereo_features(x), stereo_features(swapped)
    ild = BAND_CHANNELS.index("ild")
    np.testing.assert_allclose(b.bands[:, ild], -a.bands[:, ild], rtol=0, atol=1e-3)
    assert np.median(a.bands[:, ild]) == pytest.approx(20 * np.log10(4), abs=0.5)
    np.testing.assert_array_equal(b.gcc[0, 2:-2, 0], -a.gcc[0, 2:-2, 0])


def test_identical_channels_have_no_level_or_phase_difference():
    mono = signal_batch("noise", 2, 1, 9000, seed=7)
    features = stereo_features(np.concatenate([mono, mono], axis=1))
    np.testing.assert_allclose(features.bands[:, BAND_CHANNELS.index("ild")], 0.0, atol=1e-4)
    np.testing.assert_allclose(features.bands[:, BAND_CHANNELS.index("ipd_cos")], 1.0, atol=1e-4)
    np.testing.assert_allclose(features.bands[:, BAND_CHANNELS.index("ipd_sin")], 0.0, atol=1e-4)
    np.testing.assert_allclose(features.ipd[:, 0], 1.0, atol=1e-4)
    np.testing.assert_allclose(features.ipd[:, 1], 0.0, atol=1e-4)
    np.testing.assert_array_equal(features.gcc[..., 0], 0.0)
    # Side = (near - far)/sqrt 2 is silence: the dB floor.
    assert np.all(features.bands[:, BAND_CHANNELS.index("side_logmel")] < -120)


def test_stereo_torch_roundtrip():
    x = signal_batch("noise", 1, 2, 4000)
    out = stereo_features(torch.from_numpy(x))
    ref = stereo_features(x)
    for a, b in zip(out, ref):
        assert isinstance(a, torch.Tensor)
        np.testing.assert_array_equal(a.numpy(), b)


def _gcc_peak_oracle(correlation, max_lag, dtype):
    """GCC-PHAT's peak order (asdx/spectral.h gcc_peak_better): the highest value wins, ties go to the smaller
    |lag|, then to the negative lag; a NaN never wins, and a NaN at lag 0 is kept (nothing beats it)."""
    n = len(correlation)
    values = correlation.astype(dtype).astype(np.float32)
    order = [0] + [lag for d in range(1, max_lag + 1) for lag in (-d, d)]
    if np.isnan(values[0]):
        return 0
    top = np.nanmax([values[lag % n] for lag in order])
    return next(lag for lag in order if values[lag % n] == top)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.data(), st.booleans())
def test_gcc_peak_search_cpu_and_cuda_forms_follow_the_peak_order(log_n, data, float32):
    # Adversarial correlations: few distinct values (exact ties at +-lag), signed zeros, NaNs.
    from asdx._native import _C
    n = 2**log_n
    max_lag = data.draw(st.integers(0, max(n // 2 - 1, 0)))
    pool = data.draw(st.sampled_from([[0.0, -0.0], [1.0, 2.0, 2.0, -1.0], [np.nan, 1.0, 0.5], [np.nan],
                                      [0.1, 0.1 + 1e-12, -3.0]]))
    correlation = np.array(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)), dtype=np.float64)
    dtype = np.float32 if float32 else np.float64
    expected_lag = _gcc_peak_oracle(correlation, max_lag, dtype)
    expected_value = np.float32(correlation.astype(dtype)[expected_lag % n])
    for cpu in (False, True):
        value, lag = _C.testing.gcc_peak(correlation, max_lag, float32, cpu)
        assert lag == expected_lag, (cpu, correlation, max_lag)
        np.testing.assert_array_equal(np.float32(value), expected_value)
