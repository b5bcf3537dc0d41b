"""The C++ kernels against the NumPy references, on random and adversarial batches."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asdx import reference
from asdx.features import kaldi_fbank, logmel_dcase, stack_frames
from conftest import signal_batch

KINDS = ["noise", "silence", "square", "sine", "impulse"]

batches = st.builds(
    signal_batch,
    kind=st.sampled_from(KINDS),
    batch=st.integers(1, 3),
    channels=st.integers(1, 2),
    length=st.integers(1, 6000),
    seed=st.integers(0, 2**16),
    amplitude=st.sampled_from([1.0, 0.3, 1e-3, 1e-6]),
)


@settings(max_examples=40, deadline=None)
@given(batches)
def test_logmel_dcase_matches_reference(x):
    actual = logmel_dcase(x)
    assert actual.shape == (x.shape[0], x.shape[1], 1 + x.shape[2] // 512, 128)
    np.testing.assert_allclose(actual, reference.logmel_dcase(x), rtol=0, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(batches)
def test_kaldi_fbank_matches_reference(x):
    actual = kaldi_fbank(x)
    frames = 0 if x.shape[2] < 400 else 1 + (x.shape[2] - 400) // 160
    assert actual.shape == (x.shape[0], x.shape[1], frames, 128)
    np.testing.assert_allclose(actual, reference.kaldi_fbank(x), rtol=0, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [1, 399, 400, 511, 1023, 16001])
def test_edge_lengths_and_signals(kind, length):
    x = signal_batch(kind, 2, 1, length, amplitude=1.0)
    np.testing.assert_allclose(logmel_dcase(x), reference.logmel_dcase(x), rtol=0, atol=1e-3)
    np.testing.assert_allclose(kaldi_fbank(x), reference.kaldi_fbank(x), rtol=0, atol=1e-3)


def test_batch_64_matches_per_clip_results():
    x = signal_batch("noise", 64, 1, 3000, seed=3)
    whole = logmel_dcase(x)
    for i in (0, 17, 63):
        np.testing.assert_array_equal(whole[i], logmel_dcase(x[i : i + 1])[0])
    np.testing.assert_allclose(whole, reference.logmel_dcase(x), rtol=0, atol=1e-3)
    np.testing.assert_allclose(kaldi_fbank(x), reference.kaldi_fbank(x), rtol=0, atol=1e-3)


def test_silence_sits_at_the_documented_floors():
    x = np.zeros((1, 1, 4000), np.float32)
    np.testing.assert_allclose(logmel_dcase(x), 10 * np.log10(2.220446049250313e-16), rtol=1e-6)
    np.testing.assert_allclose(kaldi_fbank(x), np.log(np.finfo(np.float32).eps), rtol=1e-6)


@pytest.mark.parametrize("n_fft,hop,n_mels,fmax", [(512, 160, 64, None), (2048, 256, 40, 6000.0), (256, 100, 32, None)])
def test_other_logmel_geometries(n_fft, hop, n_mels, fmax):
    x = signal_batch("noise", 2, 2, 5000, seed=1)
    kwargs = dict(n_fft=n_fft, hop_length=hop, n_mels=n_mels, fmax=fmax)
    np.testing.assert_allclose(logmel_dcase(x, **kwargs), reference.logmel_dcase(x, **kwargs), rtol=0, atol=1e-3)


def test_results_do_not_depend_on_thread_count():
    import asdx

    x = signal_batch("noise", 3, 2, 20000, seed=5)
    before = asdx.get_num_threads()
    try:
        asdx.set_num_threads(1)
        single = (logmel_dcase(x), kaldi_fbank(x))
        asdx.set_num_threads(3)
        multi = (logmel_dcase(x), kaldi_fbank(x))
    finally:
        asdx.set_num_threads(before)
    for a, b in zip(single, multi):
        np.testing.assert_array_equal(a, b)


def test_torch_input_gives_torch_output_with_the_same_values():
    x = signal_batch("sine", 2, 2, 7000, seed=2)
    for fn in (logmel_dcase, kaldi_fbank):
        out = fn(torch.from_numpy(x))
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
        np.testing.assert_array_equal(out.numpy(), fn(x))


def test_float64_input_is_converted():
    x = signal_batch("noise", 1, 1, 3000)
    np.testing.assert_array_equal(logmel_dcase(x.astype(np.float64)), logmel_dcase(x))


def test_stack_frames_layout_numpy_and_torch():
    logmel = np.arange(2 * 1 * 7 * 3, dtype=np.float32).reshape(2, 1, 7, 3)
    vectors = stack_frames(logmel, n_frames=5)
    assert vectors.shape == (2, 1, 3, 15)
    for t in range(3):
        for k in range(5):
            np.testing.assert_array_equal(vectors[:, :, t, 3 * k : 3 * k + 3], logmel[:, :, t + k])
    np.testing.assert_array_equal(stack_frames(torch.from_numpy(logmel), 5).numpy(), vectors)
    assert stack_frames(logmel[:, :, :4], 5).shape == (2, 1, 0, 15)
    assert tuple(stack_frames(torch.from_numpy(logmel[:, :, :4]), 5).shape) == (2, 1, 0, 15)
    with pytest.raises(ValueError, match="n_frames"):
        stack_frames(logmel, 0)
