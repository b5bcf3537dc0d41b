"""torch implementations of asdx's native kernel families, one module per family.

They compute what the C++/CUDA kernels compute (the same formulas, the same floors, NaN and
empty-input rules) with plain torch ops, so they run on any torch device: asdx.kernels uses
them where the native kernels cannot run (ASDX_KERNELS=auto) or when asked (ASDX_KERNELS=torch),
and the benchmarks time the native kernels against them. Each takes already validated input
(the public functions in asdx.features and asdx.scoring check it) and returns torch tensors on
the input's device. Agreement with the NumPy references and the native kernels: docs/kernels.md.
"""

from asdx.torch_kernels.frontend import kaldi_fbank, logmel_dcase, stereo_features
from asdx.torch_kernels.gamma import fit_sets, gamma_ppf
from asdx.torch_kernels.gmm import gmm_diag_loglik
from asdx.torch_kernels.mahalanobis import mahalanobis_factored
from asdx.torch_kernels.stereo_view import stereo_view_w1

__all__ = ["fit_sets", "gamma_ppf", "gmm_diag_loglik", "kaldi_fbank", "logmel_dcase", "mahalanobis_factored",
           "stereo_features", "stereo_view_w1"]
