// Radix-2 FFT building blocks shared by the CPU loop and the CUDA shared-memory kernel.
//
// The transforms run in double: real machine sounds (and the golden fixtures)
// have bands 150+ dB below a frame's peak, and a float32 FFT's rounding floor
// (~eps of the peak amplitude) would swamp them. Everything after the FFT
// (powers, mel sums, logs) is float32.
//
// Both backends run the same decimation-in-time schedule: inputs are written in
// bit-reversed order, then log2(n) stages of butterflies combine them in place.
// Stage s (half-size h = 2^s) reads its twiddles from a flat table at [h - 1, 2h - 1).
#pragma once

#include <cmath>
#include <vector>

#include "asdx/common.h"

namespace asdx::fft {

struct Complex {
  double re;
  double im;
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
ASDX_HD void butterfly(double& ar, double& ai, double& br, double& bi, double wr, double wi) {
  const double tr = br * wr - bi * wi;
  const double ti = br * wi + bi * wr;
  br = ar - tr;
  bi = ai - ti;
  ar = ar + tr;
  ai = ai + ti;
}

// Two real frames x and y packed as z = x + j y share one complex FFT. Given
// Z[k] and Z[(n - k) mod n], recover X[k] = (Z[k] + conj Z[n-k]) / 2 and
// Y[k] = (Z[k] - conj Z[n-k]) / 2j.
ASDX_HD void unpack_two_real(double zr, double zi, double mirror_r, double mirror_i, Complex& x, Complex& y) {
  x.re = 0.5 * (zr + mirror_r);
  x.im = 0.5 * (zi - mirror_i);
  y.re = 0.5 * (zi + mirror_i);
  y.im = -0.5 * (zr - mirror_r);
}

ASDX_HD float squared_magnitude(const Complex& z) { return static_cast<float>(z.re * z.re + z.im * z.im); }

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
