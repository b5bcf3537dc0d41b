// The CPU FFT, built twice (x86-64-v3 and baseline) behind one symbol.
#include "fft_cpu.h"

namespace asdx::cpu {

ASDX_MULTIVERSION
void fft_bit_reversed_in_place(double* __restrict re, double* __restrict im, const fft::Tables& tables) {
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
  for (int h = first_stage; h < n; h <<= 1) {
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
