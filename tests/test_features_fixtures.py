"""The frontends against golden outputs of librosa and torchaudio (tests/fixtures/frontend.npz)."""

import numpy as np
import pytest

from asdx import reference
from asdx.features import kaldi_fbank, logmel_dcase, stack_frames
from conftest import fixture_path

SIGNALS = ["noise", "sine440", "chirp", "short", "quiet", "harmonic_plus_noise"]


@pytest.fixture(scope="module")
def frontend_npz():
    return np.load(fixture_path("frontend.npz"))


@pytest.mark.parametrize("name", SIGNALS)
def test_logmel_dcase_matches_librosa(frontend_npz, name):
    signal = frontend_npz[f"signal/{name}"]
    expected = frontend_npz[f"logmel_dcase/{name}"].T  # librosa layout is (n_mels, frames)
    actual = logmel_dcase(signal[None, None])[0, 0]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", SIGNALS)
def test_vectors_dcase_match_the_official_stacking(frontend_npz, name):
    signal = frontend_npz[f"signal/{name}"]
    expected = frontend_npz[f"vectors_dcase/{name}"]
    actual = stack_frames(logmel_dcase(signal[None, None]), n_frames=5)[0, 0]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", SIGNALS)
def test_kaldi_fbank_matches_torchaudio(frontend_npz, name):
    signal = frontend_npz[f"signal/{name}"]
    expected = frontend_npz[f"kaldi_fbank/{name}"]
    actual = kaldi_fbank(signal[None, None])[0, 0]
    assert actual.shape == expected.shape
    if expected.size == 0:
        return
    # torchaudio computed these in float32: its FFT rounding floor sits ~80 dB
    # (amplitude eps) below a frame's strongest band, so lower bands of the pure
    # tones are rounding noise in the fixture (up to 0.5 off in log energy), as are
    # values at the log floor. Compare within 60 dB of each frame's peak
    # (ln(10**6)); everything, floor included, is checked against the float64
    # reference below.
    reliable = expected >= expected.max(axis=-1, keepdims=True) - np.log(1e6)
    assert reliable.sum() >= 5 * expected.shape[0]  # a meaningful share of every clip is compared
    np.testing.assert_allclose(actual[reliable], expected[reliable], rtol=0, atol=1e-3)
    np.testing.assert_allclose(actual, reference.kaldi_fbank(signal[None, None])[0, 0], rtol=0, atol=1e-3)


def test_logmel_dcase_is_the_slaney_bank_not_the_torchaudio_htk_one(frontend_npz):
    """asdx's log-mel power sits on librosa's Slaney output, far from torchaudio's HTK variant
    (mel_ae in the fixture): guards against building the AE features with the wrong bank."""
    signal = frontend_npz["signal/noise"]
    ours = 10 ** (logmel_dcase(signal[None, None])[0, 0].astype(np.float64) / 10)
    slaney = 10 ** (frontend_npz["logmel_dcase/noise"].T / 10)
    htk_unnormalised = frontend_npz["mel_ae/noise"].T
    assert ours.shape == slaney.shape == htk_unnormalised.shape
    np.testing.assert_allclose(ours, slaney, rtol=1e-3)
    assert not np.allclose(ours, htk_unnormalised, rtol=1e-2)


def test_reference_filterbanks_match_librosa():
    librosa = pytest.importorskip("librosa", reason="librosa is the test oracle (pip install '.[test]')")
    for n_fft, n_mels in [(1024, 128), (512, 64), (2048, 40)]:
        expected = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels, dtype=np.float64)
        np.testing.assert_allclose(reference.slaney_mel_filterbank(16000, n_fft, n_mels), expected, rtol=1e-9,
                                   atol=1e-12)


def test_beats_normalisation_is_applied_after_the_log(frontend_npz):
    signal = frontend_npz["signal/noise"][None, None]
    raw = kaldi_fbank(signal)
    np.testing.assert_allclose(kaldi_fbank(signal, normalise=True), (raw - 15.41663) / (2 * 6.55582), rtol=0,
                               atol=1e-5)


# precision="float32" promises 0.01 dB on every band within 80 dB of its frame's peak
# (the float32 FFT's rounding floor sits ~140 dB below the peak amplitude).
FLOAT32_TOLERANCE_DB = 0.01
NATURAL_LOG_PER_DB = np.log(10) / 10


def _within_80_db(db):
    return db >= db.max(axis=-1, keepdims=True) - 80.0


@pytest.mark.parametrize("name", SIGNALS)
def test_float32_logmel_is_within_a_hundredth_db_of_librosa_near_the_peak(frontend_npz, name):
    signal = frontend_npz[f"signal/{name}"][None, None]
    expected = frontend_npz[f"logmel_dcase/{name}"].T
    fast = logmel_dcase(signal, precision="float32")[0, 0]
    mask = _within_80_db(expected)
    np.testing.assert_allclose(fast[mask], expected[mask], rtol=0, atol=FLOAT32_TOLERANCE_DB)


@pytest.mark.parametrize("name", SIGNALS)
def test_float32_kaldi_fbank_is_within_a_hundredth_db_near_the_peak(frontend_npz, name):
    signal = frontend_npz[f"signal/{name}"][None, None]
    exact = reference.kaldi_fbank(signal)[0, 0]
    fast = kaldi_fbank(signal, precision="float32")[0, 0]
    if exact.size == 0:
        return
    mask = _within_80_db(exact / NATURAL_LOG_PER_DB)
    np.testing.assert_allclose(fast[mask], exact[mask], rtol=0, atol=FLOAT32_TOLERANCE_DB * NATURAL_LOG_PER_DB)


def test_float32_stereo_bands_are_within_a_hundredth_db_near_the_peak(frontend_npz):
    from asdx.features import stereo_features

    near = frontend_npz["signal/harmonic_plus_noise"]
    far = np.roll(near, 7) * 0.5 + 0.01 * frontend_npz["signal/noise"][: near.size]
    stereo = np.stack([near, far])[None].astype(np.float32)
    exact = stereo_features(stereo)
    fast = stereo_features(stereo, precision="float32")
    for channel in (0, 1, 5, 6):  # the log-mel channels
        mask = _within_80_db(exact.bands[0, channel])
        np.testing.assert_allclose(fast.bands[0, channel][mask], exact.bands[0, channel][mask], rtol=0,
                                   atol=FLOAT32_TOLERANCE_DB)
    np.testing.assert_array_equal(fast.gcc[..., 0], exact.gcc[..., 0])


def test_float32_is_really_a_different_fft(frontend_npz):
    """Far below the peak the float32 FFT's rounding shows: proves the option reaches the kernel."""
    signal = frontend_npz["signal/sine440"][None, None]
    deep = ~_within_80_db(logmel_dcase(signal)[0, 0])
    assert np.abs(logmel_dcase(signal, precision="float32")[0, 0] - logmel_dcase(signal)[0, 0])[deep].max() > 1.0
    with pytest.raises(ValueError, match="precision"):
        logmel_dcase(signal, precision="half")
