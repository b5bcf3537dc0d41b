// CPU frontends: logmel_dcase, kaldi_fbank and stereo_features.
//
// Real frames are FFT'd two at a time as one complex frame (z = a + j b), so a
// real spectrum costs half a complex FFT; the stereo frontend packs the near and
// far channel of the same frame this way, so each frame is transformed once.
#include <algorithm>
#include <cstring>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/mel.h"
#include "asdx/spectral.h"
#include "asdx/window.h"
#include "fft_cpu.h"
#include "parallel.h"

namespace asdx::frontend {
namespace {

// Frames per work item are cheap (~µs); chunks below this are not worth a thread.
constexpr int64_t kMinFramesPerThread = 16;

// Copies signal[start, start + length) into frame, zero outside [0, n_samples).
void copy_padded(const float* signal, int64_t n_samples, int64_t start, int length, float* frame) {
  const int64_t lo = std::max<int64_t>(0, -start);
  const int64_t hi = std::min<int64_t>(length, n_samples - start);
  if (hi <= lo) {
    std::fill(frame, frame + length, 0.0f);
    return;
  }
  std::fill(frame, frame + lo, 0.0f);
  std::memcpy(frame + lo, signal + start + lo, sizeof(float) * (hi - lo));
  std::fill(frame + hi, frame + length, 0.0f);
}

// After the FFT of z = a + j b, writes |A[k]|^2 and |B[k]|^2 for k = 0..n/2.
void unpack_powers(const double* re, const double* im, int n, float* power_a, float* power_b) {
  for (int k = 0; k <= n / 2; ++k) {
    const int mirror = (n - k) & (n - 1);
    fft::Complex a, b;
    fft::unpack_two_real(re[k], im[k], re[mirror], im[mirror], a, b);
    power_a[k] = fft::squared_magnitude(a);
    power_b[k] = fft::squared_magnitude(b);
  }
}

struct BankView {
  const int* first_bin;
  const int* offset;
  const float* weight;
  explicit BankView(const mel::SparseFilterbank& bank)
      : first_bin(bank.first_bin.data()), offset(bank.offset.data()), weight(bank.weight.data()) {}
  float sum(const float* values, int band) const { return mel::band_sum(values, first_bin, offset, weight, band); }
};

}  // namespace

void logmel_dcase_cpu(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config,
                      float* out) {
  const int n = config.n_fft;
  const int n_mels = config.n_mels;
  const int64_t frames = logmel_frames(config, n_samples);
  const int64_t pairs = (frames + 1) / 2;
  const fft::Tables tables = fft::make_tables(n);
  const std::vector<double> window = window::periodic_hann(n);
  const mel::SparseFilterbank bank =
      mel::slaney_filterbank(config.sample_rate, n, n_mels, config.fmin, config.fmax);
  const BankView view(bank);

  cpu::parallel_for(n_signals * pairs, kMinFramesPerThread / 2, [&](int64_t begin, int64_t end) {
    std::vector<double> re(n), im(n);
    std::vector<float> frame_a(n), frame_b(n), power_a(n / 2 + 1), power_b(n / 2 + 1);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / pairs;
      const int64_t t0 = 2 * (item % pairs);
      const bool has_second = t0 + 1 < frames;
      const float* signal = signals + s * n_samples;
      copy_padded(signal, n_samples, t0 * config.hop - n / 2, n, frame_a.data());
      if (has_second) {
        copy_padded(signal, n_samples, (t0 + 1) * config.hop - n / 2, n, frame_b.data());
      } else {
        std::fill(frame_b.begin(), frame_b.end(), 0.0f);
      }
      for (int i = 0; i < n; ++i) {
        const int r = tables.bit_reversal[i];
        re[r] = static_cast<double>(frame_a[i]) * window[i];
        im[r] = static_cast<double>(frame_b[i]) * window[i];
      }
      cpu::fft_bit_reversed_in_place(re.data(), im.data(), tables);
      unpack_powers(re.data(), im.data(), n, power_a.data(), power_b.data());
      float* row = out + (s * frames + t0) * n_mels;
      for (int m = 0; m < n_mels; ++m) row[m] = spectral::power_to_db(view.sum(power_a.data(), m));
      if (has_second) {
        for (int m = 0; m < n_mels; ++m) row[n_mels + m] = spectral::power_to_db(view.sum(power_b.data(), m));
      }
    }
  });
}

void kaldi_fbank_cpu(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config,
                     float* out) {
  const int n = config.padded_length;
  const int length = config.frame_length;
  const int n_mels = config.n_mels;
  const int64_t frames = kaldi_frames(config, n_samples);
  if (frames == 0) return;
  const int64_t pairs = (frames + 1) / 2;
  const fft::Tables tables = fft::make_tables(n);
  const std::vector<double> window = window::povey(length);
  const mel::SparseFilterbank bank =
      mel::kaldi_filterbank(config.sample_rate, n, n_mels, config.low_freq, config.high_freq);
  const BankView view(bank);

  cpu::parallel_for(n_signals * pairs, kMinFramesPerThread / 2, [&](int64_t begin, int64_t end) {
    std::vector<double> re(n), im(n);
    std::vector<double> scaled(length);
    std::vector<float> power_a(n / 2 + 1), power_b(n / 2 + 1);
    // Writes the prepared, windowed frame t into one half of the packed FFT input.
    auto prepare = [&](const float* signal, int64_t t, double* target) {
      const float* frame = signal + t * config.frame_shift;
      double total = 0.0;
      for (int i = 0; i < length; ++i) {
        scaled[i] = frame[i] * spectral::kKaldiInt16Scale;
        total += scaled[i];
      }
      const double mean = total / length;
      for (int i = 0; i < length; ++i) {
        target[tables.bit_reversal[i]] =
            spectral::kaldi_prepared_sample(scaled.data(), i, mean, config.preemphasis) * window[i];
      }
      for (int i = length; i < n; ++i) target[tables.bit_reversal[i]] = 0.0;
    };
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / pairs;
      const int64_t t0 = 2 * (item % pairs);
      const bool has_second = t0 + 1 < frames;
      const float* signal = signals + s * n_samples;
      prepare(signal, t0, re.data());
      if (has_second) {
        prepare(signal, t0 + 1, im.data());
      } else {
        std::fill(im.begin(), im.end(), 0.0);
      }
      cpu::fft_bit_reversed_in_place(re.data(), im.data(), tables);
      unpack_powers(re.data(), im.data(), n, power_a.data(), power_b.data());
      for (int f = 0; f < (has_second ? 2 : 1); ++f) {
        const float* power = f == 0 ? power_a.data() : power_b.data();
        float* row = out + (s * frames + t0 + f) * n_mels;
        for (int m = 0; m < n_mels; ++m) {
          const float value = spectral::kaldi_log(view.sum(power, m));
          row[m] = config.beats_normalise ? spectral::beats_normalise(value) : value;
        }
      }
    }
  });
}

void stereo_features_cpu(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config,
                         float* bands, float* ipd, float* gcc) {
  const LogmelConfig& mc = config.mel;
  const int n = mc.n_fft;
  const int n_bins = n / 2 + 1;
  const int n_mels = mc.n_mels;
  const int64_t frames = logmel_frames(mc, n_samples);
  const int max_lag = std::min(config.max_lag, n / 2 - 1);
  const fft::Tables tables = fft::make_tables(n);
  const std::vector<double> window = window::periodic_hann(n);
  const mel::SparseFilterbank bank = mel::slaney_filterbank(mc.sample_rate, n, n_mels, mc.fmin, mc.fmax);
  const BankView view(bank);

  cpu::parallel_for(batch * frames, kMinFramesPerThread, [&](int64_t begin, int64_t end) {
    std::vector<double> re(n), im(n);
    std::vector<float> near_frame(n), far_frame(n);
    std::vector<float> near_power(n_bins), far_power(n_bins), mid_power(n_bins), side_power(n_bins);
    std::vector<float> cross_re(n_bins), cross_im(n_bins);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / frames;
      const int64_t t = item % frames;
      const float* near = stereo + (2 * b) * n_samples;
      const float* far = stereo + (2 * b + 1) * n_samples;
      copy_padded(near, n_samples, t * mc.hop - n / 2, n, near_frame.data());
      copy_padded(far, n_samples, t * mc.hop - n / 2, n, far_frame.data());
      for (int i = 0; i < n; ++i) {
        const int r = tables.bit_reversal[i];
        re[r] = static_cast<double>(near_frame[i]) * window[i];
        im[r] = static_cast<double>(far_frame[i]) * window[i];
      }
      cpu::fft_bit_reversed_in_place(re.data(), im.data(), tables);

      float* ipd_cos = ipd + ((2 * b) * frames + t) * n_bins;
      float* ipd_sin = ipd + ((2 * b + 1) * frames + t) * n_bins;
      for (int k = 0; k < n_bins; ++k) {
        const int mirror = (n - k) & (n - 1);
        fft::Complex xl, xr;
        fft::unpack_two_real(re[k], im[k], re[mirror], im[mirror], xl, xr);
        near_power[k] = fft::squared_magnitude(xl);
        far_power[k] = fft::squared_magnitude(xr);
        mid_power[k] = 0.5f * fft::squared_magnitude({xl.re + xr.re, xl.im + xr.im});
        side_power[k] = 0.5f * fft::squared_magnitude({xl.re - xr.re, xl.im - xr.im});
        // X_L conj(X_R)
        cross_re[k] = static_cast<float>(xl.re * xr.re + xl.im * xr.im);
        cross_im[k] = static_cast<float>(xl.im * xr.re - xl.re * xr.im);
        spectral::unit_phasor(cross_re[k], cross_im[k], ipd_cos[k], ipd_sin[k]);
      }

      auto band_row = [&](int channel) { return bands + (((b * kStereoBandChannels) + channel) * frames + t) * n_mels; };
      float* near_db = band_row(0);
      float* far_db = band_row(1);
      float* ild = band_row(2);
      float* band_cos = band_row(3);
      float* band_sin = band_row(4);
      float* mid_db = band_row(5);
      float* side_db = band_row(6);
      for (int m = 0; m < n_mels; ++m) {
        const float pn = view.sum(near_power.data(), m);
        const float pf = view.sum(far_power.data(), m);
        near_db[m] = spectral::power_to_db(pn);
        far_db[m] = spectral::power_to_db(pf);
        ild[m] = spectral::ild_db(pn, pf);
        spectral::unit_phasor(view.sum(cross_re.data(), m), view.sum(cross_im.data(), m), band_cos[m], band_sin[m]);
        mid_db[m] = spectral::power_to_db(view.sum(mid_power.data(), m));
        side_db[m] = spectral::power_to_db(view.sum(side_power.data(), m));
      }

      // GCC-PHAT: r = IFFT(conj(X_L) X_R / |X_L X_R|), computed as Re FFT(conj G) / n with
      // conj G[k] = cross[k] / |cross[k]| and its Hermitian mirror for k > n/2.
      for (int k = 0; k < n; ++k) {
        const bool upper = k > n / 2;
        const int source = upper ? n - k : k;
        const float cr = cross_re[source];
        const float ci = cross_im[source];
        const float scale = 1.0f / (std::sqrt(cr * cr + ci * ci) + spectral::kPhatFloor);
        const int r = tables.bit_reversal[k];
        re[r] = cr * scale;
        im[r] = (upper ? -ci : ci) * scale;
      }
      cpu::fft_bit_reversed_in_place(re.data(), im.data(), tables);
      float best_value = static_cast<float>(re[0]);
      int best_lag = 0;
      for (int lag = -max_lag; lag <= max_lag; ++lag) {
        const float value = static_cast<float>(re[(lag + n) & (n - 1)]);
        if (spectral::gcc_peak_better(value, lag, best_value, best_lag)) {
          best_value = value;
          best_lag = lag;
        }
      }
      float* peak = gcc + (b * frames + t) * 2;
      peak[0] = static_cast<float>(best_lag);
      peak[1] = best_value / static_cast<float>(n);
    }
  });
}

}  // namespace asdx::frontend
