// Per-element spectral math shared by the CPU and CUDA frontends.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "asdx/common.h"

namespace asdx::spectral {

// sys.float_info.epsilon: the floor the official DCASE baseline applies before log10.
constexpr float kDcaseLogFloor = 2.220446049250313e-16f;
// float32 machine epsilon: Kaldi / torchaudio floor the energies at this before log.
constexpr float kKaldiLogFloor = 1.1920928955078125e-07f;
// Keeps ILD finite in silent bands; small next to any audible band energy.
constexpr float kIldFloor = 1e-10f;
// Below this cross-spectrum magnitude a phase is noise: report IPD = 0 there.
constexpr float kPhaseFloor = 1e-20f;
// Added to |X_L X_R*| in the PHAT weighting.
constexpr float kPhatFloor = 1e-20f;

constexpr double kKaldiInt16Scale = 32768.0;
constexpr float kBeatsMean = 15.41663f;
constexpr float kBeatsTwoStd = 2.0f * 6.55582f;

constexpr float kTenOverLn10 = 4.342944819032518f;  // 10 / ln 10: dB from a natural log

ASDX_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

ASDX_HD float bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

// Natural log of a positive, normal, finite float, within ~1 ulp: the argument
// reduction and minimax polynomial of the Cephes library's logf (S. L. Moshier,
// "Methods and Programs for Mathematical Functions", 1989). Branch-free, so the
// CPU's loops over mel bands vectorise it (a libm log10f call per band was a
// quarter of the log-mel time); the CUDA kernels run the same function. The
// callers floor the argument first, so it is never zero, negative or NaN.
ASDX_HD float natural_log(float x) {
  const uint32_t bits = float_bits(x);
  int exponent = static_cast<int>((bits >> 23) & 0xffu) - 127;
  float m = bits_float((bits & 0x007fffffu) | 0x3f800000u);  // x = m 2^exponent, m in [1, 2)
  const bool upper = m > 1.41421356237f;                      // keep f = m - 1 in [sqrt(1/2) - 1, sqrt 2 - 1]
  m = upper ? 0.5f * m : m;
  exponent = upper ? exponent + 1 : exponent;
  const float f = m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float e = static_cast<float>(exponent);
  float y = f * z * p;
  y += -2.12194440e-4f * e;  // ln 2 = 0.693359375 - 2.12194440e-4, split so e ln 2 is exact in its high part
  y += -0.5f * z;
  return f + y + 0.693359375f * e;
}

// max(value, floor) that maps NaN to the floor (as fmaxf does) and vectorises.
ASDX_HD float floor_at(float value, float floor) { return value > floor ? value : floor; }

ASDX_HD float power_to_db(float power) { return kTenOverLn10 * natural_log(floor_at(power, kDcaseLogFloor)); }

ASDX_HD float kaldi_log(float energy) { return natural_log(floor_at(energy, kKaldiLogFloor)); }

ASDX_HD float beats_normalise(float log_energy) { return (log_energy - kBeatsMean) / kBeatsTwoStd; }

ASDX_HD float ild_db(float near_power, float far_power) {
  return kTenOverLn10 * (natural_log(near_power + kIldFloor) - natural_log(far_power + kIldFloor));
}

// Unit phasor of a cross-spectrum value: (cos, sin) of its angle, (1, 0) when it is ~0.
ASDX_HD void unit_phasor(float re, float im, float& cos_out, float& sin_out) {
  const float magnitude = sqrtf(re * re + im * im);
  if (magnitude > kPhaseFloor) {
    cos_out = re / magnitude;
    sin_out = im / magnitude;
  } else {
    cos_out = 1.0f;
    sin_out = 0.0f;
  }
}

// Kaldi frame preparation for sample n of a frame: DC removal, then pre-emphasis
// with the first sample as its own predecessor (as Kaldi and torchaudio do).
template <class Real>
ASDX_HD Real kaldi_prepared_sample(const Real* frame, int n, Real mean, Real preemphasis) {
  const Real current = frame[n] - mean;
  const Real previous = frame[n > 0 ? n - 1 : 0] - mean;
  return current - preemphasis * previous;
}

// GCC-PHAT peak order: a higher value wins; ties go to the smaller |lag|, then to the negative lag.
ASDX_HD bool gcc_peak_better(float value, int lag, float best_value, int best_lag) {
  if (value != best_value) return value > best_value;
  const int a = lag < 0 ? -lag : lag;
  const int b = best_lag < 0 ? -best_lag : best_lag;
  if (a != b) return a < b;
  return lag < best_lag;
}

// Sample of a centred frame with zero padding outside the signal (librosa center=True, pad_mode="constant").
template <class Real>
ASDX_HD Real centred_sample(const float* signal, int64_t n_samples, int64_t frame, int n, int hop, int n_fft) {
  const int64_t index = frame * hop + n - n_fft / 2;
  return (index >= 0 && index < n_samples) ? static_cast<Real>(signal[index]) : Real(0);
}

}  // namespace asdx::spectral
