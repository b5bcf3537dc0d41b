// In-place complex FFT over split real/imaginary arrays, for power-of-two n.
// Inputs must already sit in bit-reversed order (the callers scatter them there
// while windowing). The inner loop runs over contiguous twiddles so the compiler
// can vectorise it.
#pragma once

#include "asdx/fft.h"

namespace asdx::cpu {

inline void fft_bit_reversed_in_place(double* __restrict re, double* __restrict im, const fft::Tables& tables) {
  const int n = tables.n;
  int first_stage = 1;
  if (n >= 4) {
    // Stages h = 1 and h = 2 have twiddles 1 and -j: fused as one radix-4 pass.
    for (int g = 0; g < n; g += 4) {
      const double s0r = re[g] + re[g + 1], s0i = im[g] + im[g + 1];
      const double d0r = re[g] - re[g + 1], d0i = im[g] - im[g + 1];
      const double s1r = re[g + 2] + re[g + 3], s1i = im[g + 2] + im[g + 3];
      const double d1r = re[g + 2] - re[g + 3], d1i = im[g + 2] - im[g + 3];
      re[g] = s0r + s1r;
      im[g] = s0i + s1i;
      re[g + 2] = s0r - s1r;
      im[g + 2] = s0i - s1i;
      // -j * (d1r + j d1i) = d1i - j d1r
      re[g + 1] = d0r + d1i;
      im[g + 1] = d0i - d1r;
      re[g + 3] = d0r - d1i;
      im[g + 3] = d0i + d1r;
    }
    first_stage = 4;
  }
  int h = first_stage;
  // Two radix-2 stages (h, 2h) per pass over the data: same butterflies and
  // twiddles as the one-stage-at-a-time CUDA schedule, half the memory traffic.
  for (; 4 * h <= n; h <<= 2) {
    const double* __restrict w1r = tables.twiddle_re.data() + h - 1;
    const double* __restrict w1i = tables.twiddle_im.data() + h - 1;
    const double* __restrict w2r = tables.twiddle_re.data() + 2 * h - 1;
    const double* __restrict w2i = tables.twiddle_im.data() + 2 * h - 1;
    for (int g = 0; g < n; g += 4 * h) {
      double* __restrict r0 = re + g;
      double* __restrict i0 = im + g;
      double* __restrict r1 = re + g + h;
      double* __restrict i1 = im + g + h;
      double* __restrict r2 = re + g + 2 * h;
      double* __restrict i2 = im + g + 2 * h;
      double* __restrict r3 = re + g + 3 * h;
      double* __restrict i3 = im + g + 3 * h;
      for (int j = 0; j < h; ++j) {
        double a0r = r0[j], a0i = i0[j], a1r = r1[j], a1i = i1[j];
        double a2r = r2[j], a2i = i2[j], a3r = r3[j], a3i = i3[j];
        fft::butterfly(a0r, a0i, a1r, a1i, w1r[j], w1i[j]);
        fft::butterfly(a2r, a2i, a3r, a3i, w1r[j], w1i[j]);
        fft::butterfly(a0r, a0i, a2r, a2i, w2r[j], w2i[j]);
        fft::butterfly(a1r, a1i, a3r, a3i, w2r[j + h], w2i[j + h]);
        r0[j] = a0r;
        i0[j] = a0i;
        r1[j] = a1r;
        i1[j] = a1i;
        r2[j] = a2r;
        i2[j] = a2i;
        r3[j] = a3r;
        i3[j] = a3i;
      }
    }
  }
  for (; h < n; h <<= 1) {
    const double* __restrict wr = tables.twiddle_re.data() + h - 1;
    const double* __restrict wi = tables.twiddle_im.data() + h - 1;
    for (int g = 0; g < n; g += 2 * h) {
      double* __restrict ar = re + g;
      double* __restrict ai = im + g;
      double* __restrict br = re + g + h;
      double* __restrict bi = im + g + h;
      for (int j = 0; j < h; ++j) fft::butterfly(ar[j], ai[j], br[j], bi[j], wr[j], wi[j]);
    }
  }
}

}  // namespace asdx::cpu
