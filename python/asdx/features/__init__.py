"""Feature frontends backed by asdx's C++/CUDA kernels.

Each takes (batch, channels, samples) audio as a numpy array or a torch
tensor; a CUDA tensor runs the CUDA kernel, anything else the CPU kernel
(or their torch implementations: ASDX_KERNELS, asdx.kernels, docs/kernels.md),
and the result comes back in the input's kind and on its device.

The kernels have no backward: the features are constants for autograd. A
tensor that requires grad (with grad mode on) is refused with a ValueError
rather than silently cut off from the graph; pass ``.detach()``.
"""

from asdx.features.fbank import kaldi_fbank
from asdx.features.logmel import logmel_dcase, stack_frames
from asdx.features.stereo import BAND_CHANNELS, StereoFeatures, stereo_features
from asdx.features.stereo_view import VIEWS, stereo_view

__all__ = ["BAND_CHANNELS", "StereoFeatures", "VIEWS", "kaldi_fbank", "logmel_dcase", "stack_frames", "stereo_features",
           "stereo_view"]
