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
