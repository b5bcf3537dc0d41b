"""CUDA kernels against the CPU kernels (max abs diff 1e-4); skipped without a GPU."""

import numpy as np
import pytest
import torch

from asdx.features import kaldi_fbank, logmel_dcase, stereo_features
from conftest import requires_cuda, signal_batch

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.mark.parametrize("kind", ["noise", "silence", "square", "sine", "impulse"])
@pytest.mark.parametrize("length", [1, 399, 1023, 16000, 160000])
def test_mono_frontends_cuda_equal_cpu(kind, length):
    x = signal_batch(kind, 3, 2, length, amplitude=0.8)
    gpu = torch.from_numpy(x).cuda()
    for fn in (logmel_dcase, kaldi_fbank):
        out = fn(gpu)
        assert out.is_cuda and out.dtype == torch.float32
        np.testing.assert_allclose(out.cpu().numpy(), fn(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["noise", "silence", "sine"])
def test_stereo_cuda_equals_cpu(kind):
    x = signal_batch(kind, 4, 2, 48000, seed=11)
    cpu = stereo_features(x)
    gpu = stereo_features(torch.from_numpy(x).cuda())
    np.testing.assert_allclose(gpu.bands.cpu().numpy(), cpu.bands, rtol=0, atol=1e-4)
    np.testing.assert_allclose(gpu.ipd.cpu().numpy(), cpu.ipd, rtol=0, atol=1e-4)
    np.testing.assert_allclose(gpu.gcc.cpu().numpy()[..., 1], cpu.gcc[..., 1], rtol=0, atol=1e-4)
    clear = cpu.gcc[..., 1] > 0.05
    np.testing.assert_array_equal(gpu.gcc.cpu().numpy()[..., 0][clear], cpu.gcc[..., 0][clear])


def test_cuda_respects_the_current_stream_and_device():
    x = torch.from_numpy(signal_batch("noise", 2, 1, 32000)).cuda()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = logmel_dcase(x)
    stream.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), logmel_dcase(x.cpu().numpy()), rtol=0, atol=1e-4)


def test_cuda_bad_input_is_rejected_when_asked():
    x = torch.zeros((2, 1, 1000), device="cuda")
    x[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"batch index 1"):
        logmel_dcase(x, check_finite=True)
