// The stereo frontend's math after the FFT, shared by the CPU loop and the CUDA
// kernel so the CPU tests exercise the code the GPU runs: per-bin cues (powers,
// mid/side, cross-spectrum, IPD), their per-mel-band pooling (log-mel, ILD,
// band IPD), and GCC-PHAT (Knapp & Carter 1976, "The generalized correlation
// method for estimation of time delay").
#pragma once

#include <cmath>
#include <cstdint>

#include "asdx/common.h"
#include "asdx/fft.h"
#include "asdx/mel.h"
#include "asdx/spectral.h"

namespace asdx::stereo {

// One frame's per-bin scratch rows, n/2 + 1 floats each.
struct BinRows {
  float* near_power;
  float* far_power;
  float* mid_power;
  float* side_power;
  float* cross_re;  // X_near conj(X_far)
  float* cross_im;
};

// Bin k's cues from the near and far spectra X_L[k], X_R[k]; ipd_cos / ipd_sin are
// the frame's rows of the per-bin IPD output.
template <class Real>
ASDX_HD void bin_cues(const fft::Complex<Real>& xl, const fft::Complex<Real>& xr, int k, const BinRows& rows,
                      float* ipd_cos, float* ipd_sin) {
  rows.near_power[k] = fft::squared_magnitude(xl);
  rows.far_power[k] = fft::squared_magnitude(xr);
  // Mid and side are (near +- far) / sqrt 2: powers |X_L +- X_R|^2 / 2.
  rows.mid_power[k] = 0.5f * fft::squared_magnitude(fft::Complex<Real>{xl.re + xr.re, xl.im + xr.im});
  rows.side_power[k] = 0.5f * fft::squared_magnitude(fft::Complex<Real>{xl.re - xr.re, xl.im - xr.im});
  rows.cross_re[k] = static_cast<float>(xl.re * xr.re + xl.im * xr.im);
  rows.cross_im[k] = static_cast<float>(xl.im * xr.re - xl.re * xr.im);
  spectral::unit_phasor(rows.cross_re[k], rows.cross_im[k], ipd_cos[k], ipd_sin[k]);
}

// The same from one complex FFT of near + j far (the CUDA kernel's packing).
template <class Real>
ASDX_HD void packed_bin_cues(const Real* re, const Real* im, int n, int k, const BinRows& rows, float* ipd_cos,
                             float* ipd_sin) {
  const int mirror = (n - k) & (n - 1);
  fft::Complex<Real> xl, xr;
  fft::unpack_two_real(re[k], im[k], re[mirror], im[mirror], xl, xr);
  bin_cues(xl, xr, k, rows, ipd_cos, ipd_sin);
}

// Mel band m of the 7 band channels (near, far, ild, ipd_cos, ipd_sin, mid, side);
// out points at channel 0 of band m, channels `channel_stride` floats apart.
ASDX_HD void band_cues(const BinRows& rows, const int* first_bin, const int* offset, const float* weight, int m,
                       float* out, int64_t channel_stride) {
  const float near = mel::band_sum(rows.near_power, first_bin, offset, weight, m);
  const float far = mel::band_sum(rows.far_power, first_bin, offset, weight, m);
  out[0] = spectral::power_to_db(near);
  out[channel_stride] = spectral::power_to_db(far);
  out[2 * channel_stride] = spectral::ild_db(near, far);
  spectral::unit_phasor(mel::band_sum(rows.cross_re, first_bin, offset, weight, m),
                        mel::band_sum(rows.cross_im, first_bin, offset, weight, m), out[3 * channel_stride],
                        out[4 * channel_stride]);
  out[5 * channel_stride] = spectral::power_to_db(mel::band_sum(rows.mid_power, first_bin, offset, weight, m));
  out[6 * channel_stride] = spectral::power_to_db(mel::band_sum(rows.side_power, first_bin, offset, weight, m));
}

// GCC-PHAT: r = IFFT(G), G[k] = conj(X_L[k]) X_R[k] / |X_L[k] X_R[k]| (PHAT weighting).
// conj G[k] = cross[k] / |cross[k]|: writes its real and imaginary part.
ASDX_HD void phat_conj_weighted(float cross_re, float cross_im, float& out_re, float& out_im) {
  const float scale = 1.0f / (sqrtf(cross_re * cross_re + cross_im * cross_im) + spectral::kPhatFloor);
  out_re = cross_re * scale;
  out_im = cross_im * scale;
}

// The complex-FFT form: n r = Re FFT(conj G), with conj G's Hermitian mirror for k > n/2.
// Writes FFT input k (of 0..n-1) into its bit-reversed slot.
template <class Real>
ASDX_HD void phat_input(const float* cross_re, const float* cross_im, int n, int k, const int* bit_reversal, Real* re,
                        Real* im) {
  const bool upper = k > n / 2;
  const int source = upper ? n - k : k;
  float g_re, g_im;
  phat_conj_weighted(cross_re[source], cross_im[source], g_re, g_im);
  const int r = bit_reversal[k];
  re[r] = static_cast<Real>(g_re);
  im[r] = static_cast<Real>(upper ? -g_im : g_im);
}

// The correlation at `lag` after phat_input and the FFT (unnormalised: divide by n).
template <class Real>
ASDX_HD float gcc_at(const Real* re, int n, int lag) {
  return static_cast<float>(re[(lag + n) & (n - 1)]);
}

// Best (value, lag) over lags first, first + stride, ... <= max_lag, starting from lag 0.
template <class Real>
ASDX_HD void gcc_scan(const Real* re, int n, int first, int stride, int max_lag, float& best_value, int& best_lag) {
  best_value = gcc_at(re, n, 0);
  best_lag = 0;
  for (int lag = first; lag <= max_lag; lag += stride) {
    const float value = gcc_at(re, n, lag);
    if (spectral::gcc_peak_better(value, lag, best_value, best_lag)) {
      best_value = value;
      best_lag = lag;
    }
  }
}

// The output pair: peak lag in samples, peak height normalised by n.
ASDX_HD void write_gcc_peak(float best_value, int best_lag, int n, float* peak) {
  peak[0] = static_cast<float>(best_lag);
  peak[1] = best_value / static_cast<float>(n);
}

}  // namespace asdx::stereo
