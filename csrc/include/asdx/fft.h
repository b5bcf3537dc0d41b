// The radix-2 FFT of the CUDA frontends, and the complex helpers the CPU
// frontends share with them (the CPU's own FFT is pocketfft, csrc/cpu/real_fft.h).
// Everything here is host-compilable (ASDX_HD): the test-only binding
// asdx._C.testing runs this FFT on the CPU, so the CPU tests check the
// transform the GPU runs (tests/test_cuda_fft_host.py).
//
// The transforms run in `Real`. double is the default: real machine sounds (and
// the golden fixtures) have bands 150+ dB below a frame's peak, and a float32
// FFT's rounding floor (~1e-7 of the peak amplitude, i.e. ~140 dB down) swamps
// them. float is the opt-in fast path for GPUs whose double rate is 1/32-1/64
// of their float rate; it is accurate to ~0.01 dB on bands within 80 dB of the
// frame's peak. Everything after the FFT (powers, mel sums, logs) is float32.
//
// The schedule is decimation in time: inputs are written in bit-reversed order
// (Tables::bit_reversal), then log2(n) stages of butterflies combine them in
// place. Stage s (half-size h = 2^s) reads its twiddles from a flat table at
// [h - 1, 2h - 1).
#pragma once

#include <cmath>
#include <vector>

#include "asdx/common.h"

namespace asdx::fft {

template <class Real>
struct Complex {
  Real re;
  Real im;
};

ASDX_HD bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

ASDX_HD int log2_of_power_of_two(int64_t n) {
  int bits = 0;
  while ((int64_t{1} << bits) < n) ++bits;
  return bits;
}

ASDX_HD unsigned reverse_bits(unsigned index, int bits) {
  unsigned reversed = 0;
  for (int b = 0; b < bits; ++b) {
    reversed = (reversed << 1) | (index & 1u);
    index >>= 1;
  }
  return reversed;
}

// (a, b) <- (a + w b, a - w b)
template <class Real>
ASDX_HD void butterfly(Real& ar, Real& ai, Real& br, Real& bi, Real wr, Real wi) {
  const Real tr = br * wr - bi * wi;
  const Real ti = br * wi + bi * wr;
  br = ar - tr;
  bi = ai - ti;
  ar = ar + tr;
  ai = ai + ti;
}

// Stage h of the in-place transform over bit-reversed re/im: butterflies i = first,
// first + stride, ... < n/2 (the butterflies of one stage are independent).
template <class Real>
ASDX_HD void butterfly_stage(Real* re, Real* im, int n, int h, const Real* twiddle_re, const Real* twiddle_im,
                             int first, int stride) {
  for (int i = first; i < n / 2; i += stride) {
    const int j = i & (h - 1);
    const int a = ((i - j) << 1) + j;
    butterfly(re[a], im[a], re[a + h], im[a + h], twiddle_re[h - 1 + j], twiddle_im[h - 1 + j]);
  }
}

// The whole forward transform, X[k] = sum_t x[t] exp(-2 pi i k t / n), of bit-reversed re/im.
// A CUDA block passes (threadIdx.x, blockDim.x) and a barrier (__syncthreads) to run between
// stages; a single host thread passes (0, 1) and a no-op.
template <class Real, class Barrier>
ASDX_HD void forward(Real* re, Real* im, int n, const Real* twiddle_re, const Real* twiddle_im, int first, int stride,
                     const Barrier& barrier) {
  for (int h = 1; h < n; h <<= 1) {
    butterfly_stage(re, im, n, h, twiddle_re, twiddle_im, first, stride);
    barrier();
  }
}

// Two real frames x and y packed as z = x + j y share one complex FFT. Given
// Z[k] and Z[(n - k) mod n], recover X[k] = (Z[k] + conj Z[n-k]) / 2 and
// Y[k] = (Z[k] - conj Z[n-k]) / 2j.
template <class Real>
ASDX_HD void unpack_two_real(Real zr, Real zi, Real mirror_r, Real mirror_i, Complex<Real>& x, Complex<Real>& y) {
  const Real half = Real(0.5);
  x.re = half * (zr + mirror_r);
  x.im = half * (zi - mirror_i);
  y.re = half * (zi + mirror_i);
  y.im = -half * (zr - mirror_r);
}

template <class Real>
ASDX_HD float squared_magnitude(const Complex<Real>& z) {
  return static_cast<float>(z.re * z.re + z.im * z.im);
}

// Bin k of two real frames a and b packed as a + j b, after the packed FFT:
// writes |A[k]|^2 and |B[k]|^2. Both backends call this for k = 0..n/2.
template <class Real>
ASDX_HD void unpack_powers_at(const Real* re, const Real* im, int n, int k, float* power_a, float* power_b) {
  const int mirror = (n - k) & (n - 1);
  Complex<Real> a, b;
  unpack_two_real(re[k], im[k], re[mirror], im[mirror], a, b);
  power_a[k] = squared_magnitude(a);
  power_b[k] = squared_magnitude(b);
}

// Host-side tables, computed in double once per call and shared by both backends.
struct Tables {
  int n = 0;
  int bits = 0;
  std::vector<double> twiddle_re;  // n - 1 entries, stage h at [h - 1, 2h - 1)
  std::vector<double> twiddle_im;
  std::vector<int> bit_reversal;  // n entries
};

inline Tables make_tables(int n) {
  Tables t;
  t.n = n;
  t.bits = log2_of_power_of_two(n);
  t.twiddle_re.resize(n > 1 ? n - 1 : 0);
  t.twiddle_im.resize(n > 1 ? n - 1 : 0);
  for (int h = 1; h < n; h <<= 1) {
    for (int j = 0; j < h; ++j) {
      const double angle = -kPi * static_cast<double>(j) / static_cast<double>(h);
      // Snap the exact zeros (cos(-pi/2) is 6e-17 in double) so trivial twiddles stay trivial.
      const double c = std::cos(angle);
      const double s = std::sin(angle);
      t.twiddle_re[h - 1 + j] = std::fabs(c) < 1e-15 ? 0.0 : c;
      t.twiddle_im[h - 1 + j] = std::fabs(s) < 1e-15 ? 0.0 : s;
    }
  }
  t.bit_reversal.resize(n);
  for (int i = 0; i < n; ++i) t.bit_reversal[i] = static_cast<int>(reverse_bits(static_cast<unsigned>(i), t.bits));
  return t;
}

}  // namespace asdx::fft
