// Triangular mel filterbanks stored sparsely: each band keeps only its nonzero
// run of FFT bins, because each bin falls in at most two triangles and a dense
// (bands x bins) product would waste ~98% of its multiply-adds.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "asdx/common.h"

namespace asdx::mel {

struct SparseFilterbank {
  int n_bands = 0;
  int n_bins = 0;               // spectrum length the bank applies to (n_fft / 2 + 1)
  std::vector<int> first_bin;   // n_bands
  std::vector<int> offset;      // n_bands + 1, into weight
  std::vector<float> weight;
};

// Sum over the band's bins of weight * values[bin]; identical on CPU and GPU.
ASDX_HD float band_sum(const float* values, const int* first_bin, const int* offset, const float* weight, int band) {
  const int begin = offset[band];
  const int count = offset[band + 1] - begin;
  const float* v = values + first_bin[band];
  const float* w = weight + begin;
  float total = 0.0f;
  for (int i = 0; i < count; ++i) total += w[i] * v[i];
  return total;
}

inline SparseFilterbank sparsify(const std::vector<std::vector<double>>& dense, int n_bins) {
  SparseFilterbank bank;
  bank.n_bands = static_cast<int>(dense.size());
  bank.n_bins = n_bins;
  bank.offset.push_back(0);
  for (const auto& row : dense) {
    int first = 0;
    while (first < n_bins && row[first] == 0.0) ++first;
    int last = n_bins - 1;
    while (last >= first && row[last] == 0.0) --last;
    if (first > last) first = last = 0;  // empty band: one zero weight keeps the layout uniform
    bank.first_bin.push_back(first);
    for (int k = first; k <= last; ++k) bank.weight.push_back(static_cast<float>(row[k]));
    bank.offset.push_back(static_cast<int>(bank.weight.size()));
  }
  return bank;
}

// Slaney mel scale (linear below 1 kHz, logarithmic above), as in librosa with htk=False.
inline double hz_to_slaney_mel(double hz) {
  const double f_sp = 200.0 / 3.0;
  const double min_log_hz = 1000.0;
  const double min_log_mel = min_log_hz / f_sp;
  const double logstep = std::log(6.4) / 27.0;
  if (hz >= min_log_hz) return min_log_mel + std::log(hz / min_log_hz) / logstep;
  return hz / f_sp;
}

inline double slaney_mel_to_hz(double mel) {
  const double f_sp = 200.0 / 3.0;
  const double min_log_hz = 1000.0;
  const double min_log_mel = min_log_hz / f_sp;
  const double logstep = std::log(6.4) / 27.0;
  if (mel >= min_log_mel) return min_log_hz * std::exp(logstep * (mel - min_log_mel));
  return f_sp * mel;
}

// Slaney-scale triangles with Slaney area normalisation (librosa.filters.mel defaults).
inline SparseFilterbank slaney_filterbank(int sample_rate, int n_fft, int n_mels, double fmin, double fmax) {
  const int n_bins = n_fft / 2 + 1;
  std::vector<double> edges(n_mels + 2);
  const double mel_lo = hz_to_slaney_mel(fmin);
  const double mel_hi = hz_to_slaney_mel(fmax);
  for (int i = 0; i < n_mels + 2; ++i) {
    edges[i] = slaney_mel_to_hz(mel_lo + (mel_hi - mel_lo) * i / (n_mels + 1));
  }
  std::vector<std::vector<double>> dense(n_mels, std::vector<double>(n_bins, 0.0));
  for (int m = 0; m < n_mels; ++m) {
    const double rise = edges[m + 1] - edges[m];
    const double fall = edges[m + 2] - edges[m + 1];
    const double area_norm = 2.0 / (edges[m + 2] - edges[m]);
    for (int k = 0; k < n_bins; ++k) {
      const double freq = static_cast<double>(k) * sample_rate / n_fft;
      const double lower = (freq - edges[m]) / rise;
      const double upper = (edges[m + 2] - freq) / fall;
      dense[m][k] = std::max(0.0, std::min(lower, upper)) * area_norm;
    }
  }
  return sparsify(dense, n_bins);
}

inline double kaldi_mel(double hz) { return 1127.0 * std::log(1.0 + hz / 700.0); }

// Kaldi / torchaudio.compliance.kaldi mel banks: triangles equally spaced on
// 1127 ln(1 + f/700), evaluated at bin centre frequencies, no area normalisation;
// the Nyquist bin always has weight 0.
inline SparseFilterbank kaldi_filterbank(int sample_rate, int padded_length, int n_mels, double low_freq,
                                         double high_freq) {
  const int n_bins = padded_length / 2 + 1;
  const double nyquist = 0.5 * sample_rate;
  if (high_freq <= 0.0) high_freq += nyquist;
  const double bin_width = static_cast<double>(sample_rate) / padded_length;
  const double mel_lo = kaldi_mel(low_freq);
  const double mel_hi = kaldi_mel(high_freq);
  const double delta = (mel_hi - mel_lo) / (n_mels + 1);
  std::vector<std::vector<double>> dense(n_mels, std::vector<double>(n_bins, 0.0));
  for (int m = 0; m < n_mels; ++m) {
    const double left = mel_lo + m * delta;
    const double center = left + delta;
    const double right = center + delta;
    for (int k = 0; k < padded_length / 2; ++k) {
      const double mel = kaldi_mel(bin_width * k);
      const double up = (mel - left) / (center - left);
      const double down = (right - mel) / (right - center);
      dense[m][k] = std::max(0.0, std::min(up, down));
    }
  }
  return sparsify(dense, n_bins);
}

}  // namespace asdx::mel
