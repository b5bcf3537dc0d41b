// Analysis windows in double (see fft.h for why), shared by both backends.
#pragma once

#include <cmath>
#include <vector>

#include "asdx/common.h"

namespace asdx::window {

// Periodic Hann (librosa / scipy "hann" with fftbins=True): 0.5 - 0.5 cos(2 pi n / N).
inline std::vector<double> periodic_hann(int length) {
  std::vector<double> w(length);
  for (int n = 0; n < length; ++n) {
    w[n] = 0.5 - 0.5 * std::cos(2.0 * kPi * n / length);
  }
  return w;
}

// Kaldi's Povey window: (0.5 - 0.5 cos(2 pi n / (N - 1)))^0.85.
inline std::vector<double> povey(int length) {
  std::vector<double> w(length);
  const double denominator = length > 1 ? static_cast<double>(length - 1) : 1.0;
  for (int n = 0; n < length; ++n) {
    w[n] = std::pow(0.5 - 0.5 * std::cos(2.0 * kPi * n / denominator), 0.85);
  }
  return w;
}

}  // namespace asdx::window
