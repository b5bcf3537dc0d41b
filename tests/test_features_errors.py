"""Bad input gets a clear ValueError naming the argument, the batch index and the problem."""

import numpy as np
import pytest
import torch

from asdx.features import kaldi_fbank, logmel_dcase, stereo_features

FRONTENDS = [logmel_dcase, kaldi_fbank, stereo_features]


@pytest.mark.parametrize("fn", FRONTENDS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_torch", [False, True])
def test_non_finite_names_the_batch_index(fn, bad_value, as_torch):
    x = np.zeros((4, 2, 1000), np.float32)
    x[2, 1, 500] = bad_value
    with pytest.raises(ValueError, match=r"waveform\[2\].*NaN or inf.*batch index 2"):
        fn(torch.from_numpy(x) if as_torch else x)


@pytest.mark.parametrize("fn", FRONTENDS)
@pytest.mark.parametrize("shape", [(1000,), (2, 1000), (1, 1, 2, 1000)])
def test_wrong_rank(fn, shape):
    with pytest.raises(ValueError, match=r"expected shape \(batch, channels, samples\)"):
        fn(np.zeros(shape, np.float32))


@pytest.mark.parametrize("fn", FRONTENDS)
def test_zero_length(fn):
    with pytest.raises(ValueError, match="zero samples"):
        fn(np.zeros((1, 2, 0), np.float32))


@pytest.mark.parametrize("fn", FRONTENDS)
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.bool_, np.complex64])
def test_unconvertible_dtypes(fn, dtype):
    with pytest.raises(ValueError, match="dtype"):
        fn(np.zeros((1, 2, 1000), dtype))


@pytest.mark.parametrize("fn", FRONTENDS)
def test_unconvertible_torch_dtype_and_objects(fn):
    with pytest.raises(ValueError, match="dtype"):
        fn(torch.zeros((1, 2, 1000), dtype=torch.int16))
    with pytest.raises(ValueError, match="dtype"):
        fn(np.array([[["a"] * 10] * 2]))


def test_stereo_needs_two_channels():
    with pytest.raises(ValueError, match="expected 2 channels"):
        stereo_features(np.zeros((1, 1, 1000), np.float32))


def test_bad_parameters():
    x = np.zeros((1, 1, 1000), np.float32)
    with pytest.raises(ValueError, match="n_fft"):
        logmel_dcase(x, n_fft=1000)
    with pytest.raises(ValueError, match="fmax"):
        logmel_dcase(x, fmax=9000.0)
    with pytest.raises(ValueError, match="max_lag"):
        stereo_features(np.zeros((1, 2, 1000), np.float32), max_lag=-1)


def test_empty_batch_gives_empty_output():
    assert logmel_dcase(np.zeros((0, 1, 1000), np.float32)).shape == (0, 1, 2, 128)
    assert kaldi_fbank(np.zeros((0, 1, 1000), np.float32)).shape == (0, 1, 4, 128)


def test_errors_leave_no_state_behind():
    """A failed call must not poison the next one (threads joined, nothing cached)."""
    x = np.zeros((2, 1, 1000), np.float32)
    x[1, 0, 3] = np.nan
    with pytest.raises(ValueError):
        logmel_dcase(x)
    x[1, 0, 3] = 0.0
    assert np.all(np.isfinite(logmel_dcase(x)))
