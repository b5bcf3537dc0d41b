"""The w1 view's CUDA kernel against the CPU kernel and the NumPy reference; skipped without a GPU.
(Its schedule runs on the host in tests/test_stereo_view.py: _C._stereo_view_w1_radix2_host.)"""

import numpy as np
import pytest
import torch

from asdx.features import VIEWS, stereo_view
from asdx.reference.stereo_view import w1_residual
from conftest import requires_cuda, signal_batch

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.mark.parametrize("kind", ["noise", "silence", "square", "sine", "impulse"])
@pytest.mark.parametrize("length", [513, 1000, 16000, 160000])
def test_w1_cuda_equals_cpu_and_reference(kind, length):
    x = signal_batch(kind, 3, 2, length, amplitude=0.8)
    x[:, 1] = 0.5 * np.roll(x[:, 0], 7, axis=-1) + 0.5 * x[:, 1]
    out = stereo_view(torch.from_numpy(x).cuda())
    assert out.is_cuda and out.dtype == torch.float32 and out.shape == (3, length)
    peak = max(float(np.abs(x).max()), 1e-30)
    # float32 FFTs on both sides; the last samples of some lengths are divided by a squared window down to 1e-9
    # (tests/test_stereo_view.py): compare away from the clip's last 64 samples tightly, everywhere loosely
    np.testing.assert_allclose(out.cpu().numpy()[:, :-64] / peak, stereo_view(x)[:, :-64] / peak, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out.cpu().numpy()[:, :-64] / peak, w1_residual(x)[:, :-64] / peak, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out.cpu().numpy() / peak, w1_residual(x) / peak, rtol=0, atol=1e-2)


def test_views_on_cuda_keep_the_device_and_mark_non_finite_clips():
    x = torch.from_numpy(signal_batch("noise", 2, 2, 4000)).cuda()
    x[1, 0, 5] = float("nan")
    for view in VIEWS:
        out = stereo_view(x, view)
        assert out.is_cuda and out.shape == (2, 4000)
        assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()
        with pytest.raises(ValueError, match=r"audio\[1\]"):
            stereo_view(x, view, check_finite=True)


def test_w1_cuda_respects_the_current_stream():
    x = torch.from_numpy(signal_batch("noise", 2, 2, 32000)).cuda()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = stereo_view(x)
    stream.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), stereo_view(x.cpu().numpy()), rtol=0, atol=1e-5)
