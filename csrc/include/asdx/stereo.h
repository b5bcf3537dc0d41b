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

// One bin's cues from the near and far spectra X_L[k], X_R[k].
struct BinCue {
  float near_power, far_power, mid_power, side_power;
  float cross_re, cross_im;  // X_near conj(X_far)
  float ipd_cos, ipd_sin;
};

template <class Real>
ASDX_HD BinCue bin_cue(const fft::Complex<Real>& xl, const fft::Complex<Real>& xr) {
  BinCue c;
  c.near_power = fft::squared_magnitude(xl);
  c.far_power = fft::squared_magnitude(xr);
  // Mid and side are (near +- far) / sqrt 2: powers |X_L +- X_R|^2 / 2.
  c.mid_power = 0.5f * fft::squared_magnitude(fft::Complex<Real>{xl.re + xr.re, xl.im + xr.im});
  c.side_power = 0.5f * fft::squared_magnitude(fft::Complex<Real>{xl.re - xr.re, xl.im - xr.im});
  c.cross_re = static_cast<float>(xl.re * xr.re + xl.im * xr.im);
  c.cross_im = static_cast<float>(xl.im * xr.re - xl.re * xr.im);
  spectral::unit_phasor(c.cross_re, c.cross_im, c.ipd_cos, c.ipd_sin);
  return c;
}

// Bin k's cues into the frame's rows; ipd_cos / ipd_sin are the frame's rows of the per-bin IPD output.
template <class Real>
ASDX_HD void bin_cues(const fft::Complex<Real>& xl, const fft::Complex<Real>& xr, int k, const BinRows& rows,
                      float* ipd_cos, float* ipd_sin) {
  const BinCue c = bin_cue(xl, xr);
  rows.near_power[k] = c.near_power;
  rows.far_power[k] = c.far_power;
  rows.mid_power[k] = c.mid_power;
  rows.side_power[k] = c.side_power;
  rows.cross_re[k] = c.cross_re;
  rows.cross_im[k] = c.cross_im;
  ipd_cos[k] = c.ipd_cos;
  ipd_sin[k] = c.ipd_sin;
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

// The six per-bin rows pooled over mel band m, in one pass over its bins; each sum
// adds its bins in mel::band_sum's order, so it equals band_sum of that row.
struct BandSums {
  float near, far, cross_re, cross_im, mid, side;
};

ASDX_HD BandSums band_sums(const BinRows& rows, const int* first_bin, const int* offset, const float* weight, int m) {
  const int begin = offset[m];
  const int count = offset[m + 1] - begin;
  const int first = first_bin[m];
  const float* w = weight + begin;
  BandSums s{0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < count; ++i) {
    const int k = first + i;
    s.near += w[i] * rows.near_power[k];
    s.far += w[i] * rows.far_power[k];
    s.cross_re += w[i] * rows.cross_re[k];
    s.cross_im += w[i] * rows.cross_im[k];
    s.mid += w[i] * rows.mid_power[k];
    s.side += w[i] * rows.side_power[k];
  }
  return s;
}

// A band's 7 channels (near, far, ild, ipd_cos, ipd_sin, mid, side) from its sums.
struct BandCue {
  float channel[7];
};

ASDX_HD BandCue band_cue(const BandSums& s) {
  BandCue c;
  c.channel[0] = spectral::power_to_db(s.near);
  c.channel[1] = spectral::power_to_db(s.far);
  c.channel[2] = spectral::ild_db(s.near, s.far);
  spectral::unit_phasor(s.cross_re, s.cross_im, c.channel[3], c.channel[4]);
  c.channel[5] = spectral::power_to_db(s.mid);
  c.channel[6] = spectral::power_to_db(s.side);
  return c;
}

// band_cue's channels to out (channel 0), channels `channel_stride` floats apart.
ASDX_HD void band_outputs(const BandSums& s, float* out, int64_t channel_stride) {
  const BandCue c = band_cue(s);
  for (int i = 0; i < 7; ++i) out[i * channel_stride] = c.channel[i];
}

// Mel band m of the 7 band channels, as band_outputs writes them.
ASDX_HD void band_cues(const BinRows& rows, const int* first_bin, const int* offset, const float* weight, int m,
                       float* out, int64_t channel_stride) {
  band_outputs(band_sums(rows, first_bin, offset, weight, m), out, channel_stride);
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

// gcc_scan's peak over every lag in [-max_lag, max_lag] (0 <= max_lag < n/2), for one
// thread that scans them all (the CPU): the same (value, lag) in two passes without a
// branch per lag. First the highest value, as kLanes interleaved running maxima that
// the compiler vectorises (a NaN never wins, as in gcc_peak_better); then the first
// lag in gcc_peak_better's order (|lag| up, the negative one first) holding it.
template <class Real>
ASDX_HD void gcc_peak(const Real* re, int n, int max_lag, float& best_value, int& best_lag) {
  constexpr int kLanes = 8;
  const float at_zero = gcc_at(re, n, 0);
  float lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = at_zero;
  for (int side = 0; side < 2; ++side) {
    const Real* x = side == 0 ? re + 1 : re + n - max_lag;  // lags 1..max_lag, then -max_lag..-1
    int i = 0;
    for (; i + kLanes <= max_lag; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float v = static_cast<float>(x[i + l]);
        lane[l] = v > lane[l] ? v : lane[l];
      }
    }
    for (; i < max_lag; ++i) {
      const float v = static_cast<float>(x[i]);
      lane[0] = v > lane[0] ? v : lane[0];
    }
  }
  float top = lane[0];
  for (int l = 1; l < kLanes; ++l) top = lane[l] > top ? lane[l] : top;
  best_lag = 0;  // also when lag 0 holds a NaN: then nothing beats it and nothing equals top
  for (int d = 0; d <= max_lag; ++d) {
    if (gcc_at(re, n, -d) == top) {
      best_lag = -d;
      break;
    }
    if (gcc_at(re, n, d) == top) {
      best_lag = d;
      break;
    }
  }
  best_value = gcc_at(re, n, best_lag);
}

// The output pair: peak lag in samples, peak height normalised by n.
ASDX_HD void write_gcc_peak(float best_value, int best_lag, int n, float* peak) {
  peak[0] = static_cast<float>(best_lag);
  peak[1] = best_value / static_cast<float>(n);
}

}  // namespace asdx::stereo
