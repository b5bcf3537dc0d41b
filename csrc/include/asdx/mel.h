// Triangular mel filterbanks stored sparsely: each band keeps only its nonzero
// run of FFT bins, because each bin falls in at most two triangles and a dense
// (bands x bins) product would waste ~98% of its multiply-adds.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>
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

// Appends a band whose weight at bin k is weight(k) for k in [lo, hi] and zero
// elsewhere, keeping only its nonzero run; an empty band keeps one zero weight, so
// the layout stays uniform. The builders below evaluate their triangles only on a
// bin range that holds the triangle (every bin outside it has weight exactly 0):
// evaluating every band at every bin was ~0.45 ms a call, more than the frames of
// a 1 s clip.
template <class Weight>
void append_band(SparseFilterbank& bank, int lo, int hi, const Weight& weight) {
  std::vector<double> row;
  for (int k = lo; k <= hi; ++k) row.push_back(weight(k));
  int first = 0;
  const int size = static_cast<int>(row.size());
  while (first < size && row[first] == 0.0) ++first;
  int last = size - 1;
  while (last >= first && row[last] == 0.0) --last;
  if (first > last) {
    bank.first_bin.push_back(0);
    bank.weight.push_back(0.0f);
  } else {
    bank.first_bin.push_back(lo + first);
    for (int i = first; i <= last; ++i) bank.weight.push_back(static_cast<float>(row[i]));
  }
  bank.offset.push_back(static_cast<int>(bank.weight.size()));
}

inline SparseFilterbank empty_bank(int n_bands, int n_bins) {
  SparseFilterbank bank;
  bank.n_bands = n_bands;
  bank.n_bins = n_bins;
  bank.offset.push_back(0);
  return bank;
}

// A bin range [lo, hi] of 0..n_bins-1 holding every bin whose position (nondecreasing
// in k) lies in [from, to], plus one bin on each side; by bisection.
template <class Position>
std::pair<int, int> bins_within(int n_bins, double from, double to, const Position& position) {
  auto first_where = [&](auto beyond) {  // the first k with beyond(position(k)), else n_bins
    int lo = 0, hi = n_bins;
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (beyond(position(mid))) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  };
  const int lo = first_where([&](double x) { return x >= from; });
  const int hi = first_where([&](double x) { return x > to; });
  return {std::max(lo - 1, 0), std::min(hi, n_bins - 1)};
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
  auto frequency = [&](int k) { return static_cast<double>(k) * sample_rate / n_fft; };
  SparseFilterbank bank = empty_bank(n_mels, n_bins);
  for (int m = 0; m < n_mels; ++m) {
    const double rise = edges[m + 1] - edges[m];
    const double fall = edges[m + 2] - edges[m + 1];
    const double area_norm = 2.0 / (edges[m + 2] - edges[m]);
    const auto [lo, hi] = bins_within(n_bins, edges[m], edges[m + 2], frequency);
    append_band(bank, lo, hi, [&](int k) {
      const double lower = (frequency(k) - edges[m]) / rise;
      const double upper = (edges[m + 2] - frequency(k)) / fall;
      return std::max(0.0, std::min(lower, upper)) * area_norm;
    });
  }
  return bank;
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
  std::vector<double> bin_mel(padded_length / 2);  // the Nyquist bin is left out
  for (int k = 0; k < padded_length / 2; ++k) bin_mel[k] = kaldi_mel(bin_width * k);
  const int n_weighted = static_cast<int>(bin_mel.size());
  SparseFilterbank bank = empty_bank(n_mels, n_bins);
  for (int m = 0; m < n_mels; ++m) {
    const double left = mel_lo + m * delta;
    const double center = left + delta;
    const double right = center + delta;
    // A triangle lies within (left, right) when delta > 0; otherwise (a degenerate range) look at every bin.
    const auto [lo, hi] = delta > 0.0 ? bins_within(n_weighted, left, right, [&](int k) { return bin_mel[k]; })
                                      : std::pair<int, int>{0, n_weighted - 1};
    append_band(bank, lo, hi, [&](int k) {
      const double up = (bin_mel[k] - left) / (center - left);
      const double down = (right - bin_mel[k]) / (right - center);
      return std::max(0.0, std::min(up, down));
    });
  }
  return bank;
}

}  // namespace asdx::mel
