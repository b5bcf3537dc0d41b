"""Bad input gets a clear ValueError naming the argument, the batch index and the problem."""

import numpy as np
import pytest
import torch

from asdx._native import _C
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


# The NaN/inf check above lives in Python (asdx._arrays.prepare_waveform) and runs before
# any kernel thread starts. The compiled kernels have no finiteness check of their own (csrc/bindings
# only guards memory safety): called directly with a NaN they must still return, keep its effect
# in the signal that holds it (no scratch buffer carried from one signal or thread to the next), and
# leave nothing behind for the next call.
NATIVE_CALLS = {
    # name: (call, output index, signals per call); parameters as the Python wrappers pass them
    "logmel_dcase_cpu": (lambda x: [_C.logmel_dcase_cpu(x.reshape(-1, x.shape[-1]), 16000, 1024, 512, 128,
                                                        0.0, 8000.0, False)], 1),
    "kaldi_fbank_cpu": (lambda x: [_C.kaldi_fbank_cpu(x.reshape(-1, x.shape[-1]), 16000, 400, 160, 128, 20.0,
                                                      0.0, 0.97, False, False)], 1),
    "stereo_features_cpu": (lambda x: list(_C.stereo_features_cpu(x, 16000, 1024, 512, 128, 0.0, 8000.0, 320,
                                                                False)),
                            2),
}


@pytest.mark.parametrize("name", sorted(NATIVE_CALLS))
def test_native_kernels_keep_a_nan_in_its_own_signal(name):
    from asdx._native import get_num_threads, set_num_threads

    call, channels = NATIVE_CALLS[name]
    rng = np.random.default_rng(0)
    # 1100 samples: an odd number of frames (3 log-mel, 5 fbank), so the kernels' two-frames-per-FFT
    # packing has a lone last frame, next to which the following signal's first frame must not go.
    clean = (0.1 * rng.standard_normal((40, channels, 1100))).astype(np.float32)
    bad = clean.copy()
    bad[7, 0, 100] = np.nan  # in signal 7's first frame
    before = get_num_threads()
    try:
        set_num_threads(2)
        expected = [np.asarray(o) for o in call(clean)]
        poisoned = [np.asarray(o) for o in call(bad)]  # no exception: the kernels do not check
        after = [np.asarray(o) for o in call(clean)]
    finally:
        set_num_threads(before)
    row = 7 if channels == 2 else 7 * channels  # logmel/fbank outputs are per (clip, channel) signal
    others = np.delete(np.arange(expected[0].shape[0]), row)
    for e, p, a in zip(expected, poisoned, after):
        # the NaN reaches its own signal's features (as NaN, or flushed to the log floor) ...
        assert not np.array_equal(p[row], e[row])
        np.testing.assert_array_equal(p[others], e[others])  # ... and no other signal's
        np.testing.assert_array_equal(a, e)  # the next call is as if the bad one never happened
