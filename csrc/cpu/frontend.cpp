// CPU frontends: logmel_dcase, kaldi_fbank and stereo_features.
//
// One work item per frame: window it, real FFT (pocketfft, see real_fft.h), then
// the per-bin and per-band math the CUDA kernels run too (asdx/spectral.h,
// asdx/mel.h, asdx/stereo.h). The stereo frontend transforms each channel of a
// frame once and derives every cue from those two spectra.
#include <algorithm>
#include <cstring>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/frontend_tables.h"
#include "asdx/mel.h"
#include "asdx/spectral.h"
#include "asdx/stereo.h"
#include "asdx/window.h"
#include "parallel.h"
#include "real_fft.h"

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

// A configuration's window (in the FFT's precision), mel bank and FFT plan, built once per call.
template <class Real>
struct Setup {
  std::vector<Real> window;
  mel::SparseFilterbank bank;
  cpu::RealFft<Real> fft;
  Setup(const std::vector<double>& window_double, mel::SparseFilterbank filterbank, int n_fft)
      : window(window_double.begin(), window_double.end()), bank(std::move(filterbank)), fft(n_fft) {}
  float band(const float* values, int m) const {
    return mel::band_sum(values, bank.first_bin.data(), bank.offset.data(), bank.weight.data(), m);
  }
  // |X[k]|^2 for k = 0..n/2 of a forward-transformed frame.
  void powers(const Real* spectrum, int n, float* power) const {
    for (int k = 0; k <= n / 2; ++k) power[k] = fft::squared_magnitude(fft.bin(spectrum, k));
  }
};

template <class Real>
Setup<Real> logmel_setup(const LogmelConfig& c) {
  return Setup<Real>(window::periodic_hann(c.n_fft),
                     mel::slaney_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax), c.n_fft);
}

// The centred, windowed frame t of signal (librosa center=True, zero padding) into target.
template <class Real>
void centred_frame(const float* signal, int64_t n_samples, int64_t t, int hop, int n, const std::vector<Real>& window,
                   float* frame, Real* target) {
  copy_padded(signal, n_samples, t * hop - n / 2, n, frame);
  for (int i = 0; i < n; ++i) target[i] = static_cast<Real>(frame[i]) * window[i];
}

template <class Real>
void logmel_impl(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config, float* out) {
  const int n = config.n_fft;
  const int n_mels = config.n_mels;
  const int64_t frames = logmel_frames(config, n_samples);
  const Setup<Real> setup = logmel_setup<Real>(config);

  cpu::parallel_for(n_signals * frames, kMinFramesPerThread, [&](int64_t begin, int64_t end) {
    std::vector<Real> spectrum(n);
    std::vector<float> frame(n), power(n / 2 + 1);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / frames;
      const int64_t t = item % frames;
      centred_frame(signals + s * n_samples, n_samples, t, config.hop, n, setup.window, frame.data(), spectrum.data());
      setup.fft.forward(spectrum.data());
      setup.powers(spectrum.data(), n, power.data());
      float* row = out + item * n_mels;
      for (int m = 0; m < n_mels; ++m) row[m] = setup.band(power.data(), m);
      for (int m = 0; m < n_mels; ++m) row[m] = spectral::power_to_db(row[m]);  // a separate loop: vectorised
    }
  });
}

template <class Real>
void kaldi_impl(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config, float* out) {
  const int n = config.padded_length;
  const int length = config.frame_length;
  const int n_mels = config.n_mels;
  const int64_t frames = kaldi_frames(config, n_samples);
  if (frames == 0) return;
  const Setup<Real> setup(window::povey(length),
                          mel::kaldi_filterbank(config.sample_rate, n, n_mels, config.low_freq, config.high_freq), n);
  const Real preemphasis = static_cast<Real>(config.preemphasis);

  cpu::parallel_for(n_signals * frames, kMinFramesPerThread, [&](int64_t begin, int64_t end) {
    std::vector<Real> spectrum(n), scaled(length);
    std::vector<float> power(n / 2 + 1);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / frames;
      const float* frame = signals + s * n_samples + (item % frames) * config.frame_shift;
      Real total = 0;
      for (int i = 0; i < length; ++i) {
        scaled[i] = static_cast<Real>(frame[i] * spectral::kKaldiInt16Scale);
        total += scaled[i];
      }
      const Real mean = total / static_cast<Real>(length);
      for (int i = 0; i < length; ++i) {
        spectrum[i] = spectral::kaldi_prepared_sample(scaled.data(), i, mean, preemphasis) * setup.window[i];
      }
      std::fill(spectrum.begin() + length, spectrum.end(), Real(0));
      setup.fft.forward(spectrum.data());
      setup.powers(spectrum.data(), n, power.data());
      float* row = out + item * n_mels;
      for (int m = 0; m < n_mels; ++m) row[m] = setup.band(power.data(), m);
      for (int m = 0; m < n_mels; ++m) row[m] = spectral::kaldi_log(row[m]);  // a separate loop: vectorised
      if (config.beats_normalise) {
        for (int m = 0; m < n_mels; ++m) row[m] = spectral::beats_normalise(row[m]);
      }
    }
  });
}

template <class Real>
void stereo_impl(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config, float* bands,
                 float* ipd, float* gcc) {
  const LogmelConfig& mc = config.mel;
  const int n = mc.n_fft;
  const int n_bins = n / 2 + 1;
  const int n_mels = mc.n_mels;
  const int64_t frames = logmel_frames(mc, n_samples);
  const int max_lag = std::min(config.max_lag, n / 2 - 1);
  const Setup<Real> setup = logmel_setup<Real>(mc);
  const mel::SparseFilterbank& bank = setup.bank;

  cpu::parallel_for(batch * frames, kMinFramesPerThread, [&](int64_t begin, int64_t end) {
    std::vector<Real> near_spectrum(n), far_spectrum(n);
    std::vector<float> frame(n), bins(6 * n_bins);
    const stereo::BinRows rows{bins.data(),          bins.data() + n_bins,     bins.data() + 2 * n_bins,
                               bins.data() + 3 * n_bins, bins.data() + 4 * n_bins, bins.data() + 5 * n_bins};
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / frames;
      const int64_t f = item % frames;
      centred_frame(stereo + (2 * b) * n_samples, n_samples, f, mc.hop, n, setup.window, frame.data(),
                    near_spectrum.data());
      centred_frame(stereo + (2 * b + 1) * n_samples, n_samples, f, mc.hop, n, setup.window, frame.data(),
                    far_spectrum.data());
      setup.fft.forward(near_spectrum.data());
      setup.fft.forward(far_spectrum.data());

      float* ipd_cos = ipd + ((2 * b) * frames + f) * n_bins;
      float* ipd_sin = ipd + ((2 * b + 1) * frames + f) * n_bins;
      for (int k = 0; k < n_bins; ++k) {
        stereo::bin_cues(setup.fft.bin(near_spectrum.data(), k), setup.fft.bin(far_spectrum.data(), k), k, rows,
                         ipd_cos, ipd_sin);
      }
      float* band_out = bands + (b * kStereoBandChannels * frames + f) * n_mels;
      for (int m = 0; m < n_mels; ++m) {
        stereo::band_cues(rows, bank.first_bin.data(), bank.offset.data(), bank.weight.data(), m, band_out + m,
                          frames * n_mels);
      }

      // GCC-PHAT: n r = the unnormalised inverse transform of G = conj(conj G).
      Real* correlation = near_spectrum.data();  // free again
      for (int k = 0; k < n_bins; ++k) {
        float g_re, g_im;
        stereo::phat_conj_weighted(rows.cross_re[k], rows.cross_im[k], g_re, g_im);
        setup.fft.set_bin(correlation, k, static_cast<Real>(g_re), static_cast<Real>(-g_im));
      }
      setup.fft.backward(correlation);
      float best_value;
      int best_lag;
      stereo::gcc_scan(correlation, n, -max_lag, 1, max_lag, best_value, best_lag);
      stereo::write_gcc_peak(best_value, best_lag, n, gcc + (b * frames + f) * 2);
    }
  });
}

}  // namespace

void logmel_dcase_cpu(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config,
                      bool float32, float* out) {
  with_precision(float32, [&](auto real) {
    logmel_impl<decltype(real)>(signals, n_signals, n_samples, config, out);
  });
}

void kaldi_fbank_cpu(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config,
                     bool float32, float* out) {
  with_precision(float32, [&](auto real) {
    kaldi_impl<decltype(real)>(signals, n_signals, n_samples, config, out);
  });
}

void stereo_features_cpu(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config,
                         bool float32, float* bands, float* ipd, float* gcc) {
  with_precision(float32, [&](auto real) {
    stereo_impl<decltype(real)>(stereo, batch, n_samples, config, bands, ipd, gcc);
  });
}

}  // namespace asdx::frontend
