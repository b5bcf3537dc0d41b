// Per-element spectral math shared by the CPU and CUDA frontends.
#pragma once

#include <cmath>

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

ASDX_HD float power_to_db(float power) { return 10.0f * log10f(fmaxf(power, kDcaseLogFloor)); }

ASDX_HD float kaldi_log(float energy) { return logf(fmaxf(energy, kKaldiLogFloor)); }

ASDX_HD float beats_normalise(float log_energy) { return (log_energy - kBeatsMean) / kBeatsTwoStd; }

ASDX_HD float ild_db(float near_power, float far_power) {
  return 10.0f * log10f((near_power + kIldFloor) / (far_power + kIldFloor));
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
