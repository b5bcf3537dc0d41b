// The CPU frontends' FFT: pocketfft's real transform (M. Reinecke, header-only C++
// pocketfft, vendored unmodified in third_party/pocketfft, BSD-3-Clause). It beat
// asdx's own radix-2 complex FFT (two real frames packed per transform) by 1.4-1.6x
// per frame on x86-64 (benchmarks/RESULTS.md, bench_frontend). The CUDA kernels keep
// their shared-memory radix-2 FFT (asdx/fft.h).
#pragma once

#define POCKETFFT_NO_MULTITHREADING  // asdx's own pool runs the frames in parallel
#include "pocketfft_hdronly.h"

#include "asdx/fft.h"

namespace asdx::cpu {

// One length's plan; exec is const and allocates its own scratch, so threads may share it.
template <class Real>
class RealFft {
 public:
  explicit RealFft(int n) : n_(n), plan_(static_cast<size_t>(n)) {}

  // In place: n real samples -> FFTPACK half-complex order r0, r1, i1, r2, i2, ..., r_{n/2}.
  void forward(Real* data) const { plan_.exec(data, Real(1), true); }
  // In place: half-complex spectrum X -> sum_k X[k] e^{+2 pi i k m / n} (unnormalised inverse).
  void backward(Real* data) const { plan_.exec(data, Real(1), false); }

  // Bin k (0..n/2) of a half-complex spectrum (n even).
  fft::Complex<Real> bin(const Real* spectrum, int k) const {
    if (k == 0) return {spectrum[0], Real(0)};
    if (2 * k == n_) return {spectrum[n_ - 1], Real(0)};
    return {spectrum[2 * k - 1], spectrum[2 * k]};
  }
  // Writes bin k (0..n/2) of a half-complex spectrum; the imaginary parts of bins 0 and n/2 have no slot.
  void set_bin(Real* spectrum, int k, Real re, Real im) const {
    if (k == 0) {
      spectrum[0] = re;
    } else if (2 * k == n_) {
      spectrum[n_ - 1] = re;
    } else {
      spectrum[2 * k - 1] = re;
      spectrum[2 * k] = im;
    }
  }

 private:
  int n_;
  pocketfft::detail::pocketfft_r<Real> plan_;
};

}  // namespace asdx::cpu
