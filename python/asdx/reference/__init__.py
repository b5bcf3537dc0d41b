"""Plain NumPy versions of every asdx kernel: the test oracle and the
benchmark baseline. Written for clarity, in float64, with dense matrices.
The frontends are re-exported here; the scoring references live in
asdx.reference.mahalanobis, asdx.reference.gmm and asdx.reference.gamma, the
nearest-neighbour bank's in asdx.reference.knn."""

from asdx.reference.frontend import (
    gcc_phat_correlation,
    kaldi_fbank,
    kaldi_mel_filterbank,
    logmel_dcase,
    slaney_mel_filterbank,
    stereo_features,
)

__all__ = [
    "gcc_phat_correlation",
    "kaldi_fbank",
    "kaldi_mel_filterbank",
    "logmel_dcase",
    "slaney_mel_filterbank",
    "stereo_features",
]
