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

  // Whole-spectrum accessors of the half-complex layout (n even): straight loops
  // over contiguous arrays that the compiler vectorises, for the frontends' per-frame
  // work; bin() and set_bin() below branch on k and keep a loop over bins scalar.

  // power[k] = |X[k]|^2 for k = 0..n/2, rounded to float.
  void powers(const Real* spectrum, float* power) const {
    const int half = n_ / 2;
    power[0] = static_cast<float>(spectrum[0] * spectrum[0]);
    for (int k = 1; k < half; ++k) {
      const Real re = spectrum[2 * k - 1], im = spectrum[2 * k];
      power[k] = static_cast<float>(re * re + im * im);
    }
    power[half] = static_cast<float>(spectrum[n_ - 1] * spectrum[n_ - 1]);
  }
  // The half-complex spectrum with X[k] = re[k] + i im[k], k = 0..n/2 (im[0] and im[n/2] have no slot).
  void join(const float* re, const float* im, Real* spectrum) const {
    const int half = n_ / 2;
    spectrum[0] = static_cast<Real>(re[0]);
    for (int k = 1; k < half; ++k) {
      spectrum[2 * k - 1] = static_cast<Real>(re[k]);
      spectrum[2 * k] = static_cast<Real>(im[k]);
    }
    spectrum[n_ - 1] = static_cast<Real>(re[half]);
  }

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
