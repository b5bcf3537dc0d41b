// CPU frontends: logmel_dcase, kaldi_fbank and stereo_features.
//
// One work item per frame: window it, real FFT (pocketfft, see real_fft.h), then
// the per-bin and per-band math the CUDA kernels run too (asdx/spectral.h,
// asdx/mel.h, asdx/stereo.h). The stereo frontend transforms each channel of a
// frame once and derives every cue from those two spectra.
//
// The per-frame loops around the FFT are straight loops over contiguous arrays
// (the half-complex spectrum read in place or through RealFft::powers / join,
// never bin by bin through RealFft::bin) so that GCC vectorises them in the
// baseline x86-64 build; the FFT is about 60 % of a log-mel frame and 45 % of a
// stereo frame, so the rest is worth keeping lean.
#include <algorithm>
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
};

template <class Real>
Setup<Real> logmel_setup(const LogmelConfig& c) {
  return Setup<Real>(window::periodic_hann(c.n_fft),
                     mel::slaney_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax), c.n_fft);
}

// The centred, windowed frame t of signal (librosa center=True, zero padding) into target.
template <class Real>
void centred_frame(const float* signal, int64_t n_samples, int64_t t, int hop, int n, const Real* window,
                   Real* target) {
  const int64_t start = t * hop - n / 2;
  const int lo = static_cast<int>(std::clamp<int64_t>(-start, 0, n));        // first sample inside the signal
  const int hi = static_cast<int>(std::clamp<int64_t>(n_samples - start, lo, n));  // one past the last
  const float* x = signal + start;
  std::fill(target, target + lo, Real(0));
  for (int i = lo; i < hi; ++i) target[i] = static_cast<Real>(x[i]) * window[i];
  std::fill(target + hi, target + n, Real(0));
}

template <class Real>
void logmel_impl(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config, float* out) {
  const int n = config.n_fft;
  const int n_mels = config.n_mels;
  const int64_t frames = logmel_frames(config, n_samples);
  const Setup<Real> setup = logmel_setup<Real>(config);

  cpu::parallel_for(n_signals * frames, kMinFramesPerThread, [&](int64_t begin, int64_t end) {
    std::vector<Real> spectrum(n);
    std::vector<float> power(n / 2 + 1);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / frames;
      const int64_t t = item % frames;
      centred_frame(signals + s * n_samples, n_samples, t, config.hop, n, setup.window.data(), spectrum.data());
      setup.fft.forward(spectrum.data());
      setup.fft.powers(spectrum.data(), power.data());
      float* row = out + item * n_mels;
      for (int m = 0; m < n_mels; ++m) row[m] = setup.band(power.data(), m);
      for (int m = 0; m < n_mels; ++m) row[m] = spectral::power_to_db(row[m]);  // a separate loop: vectorised
    }
  });
}

// x[0] + ... + x[n - 1] in kLanes interleaved partial sums, added at the end: the
// compiler vectorises it, where one running sum is a chain of dependent adds (the
// Kaldi frame mean's; the order changes the mean's rounding only).
template <class Real>
Real sum(const Real* x, int n) {
  constexpr int kLanes = 8;
  Real partial[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += x[i + l];
  }
  Real total = 0;
  for (; i < n; ++i) total += x[i];
  for (int l = 0; l < kLanes; ++l) total += partial[l];
  return total;
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
      for (int i = 0; i < length; ++i) scaled[i] = static_cast<Real>(frame[i] * spectral::kKaldiInt16Scale);
      const Real mean = sum(scaled.data(), length) / static_cast<Real>(length);
      spectrum[0] = spectral::kaldi_prepared_sample(scaled.data(), 0, mean, preemphasis) * setup.window[0];
      for (int i = 1; i < length; ++i) {  // from 1: sample i - 1 is the predecessor, a straight loop
        spectrum[i] = spectral::kaldi_prepared_sample(scaled.data(), i, mean, preemphasis) * setup.window[i];
      }
      std::fill(spectrum.begin() + length, spectrum.end(), Real(0));
      setup.fft.forward(spectrum.data());
      setup.fft.powers(spectrum.data(), power.data());
      float* row = out + item * n_mels;
      for (int m = 0; m < n_mels; ++m) row[m] = setup.band(power.data(), m);
      for (int m = 0; m < n_mels; ++m) row[m] = spectral::kaldi_log(row[m]);  // a separate loop: vectorised
      if (config.beats_normalise) {
        for (int m = 0; m < n_mels; ++m) row[m] = spectral::beats_normalise(row[m]);
      }
    }
  });
}

// stereo::bin_cue over a frame's bins k = 0..n/2, read straight from the near and
// far half-complex spectra (RealFft's layout), into its rows. The rows are distinct
// arrays: __restrict says so, which the vectoriser needs (it gives up on a loop
// that needs more than 10 run-time overlap checks).
template <class Real>
void frame_bin_cues(const Real* __restrict near, const Real* __restrict far, int n, float* __restrict near_power,
                    float* __restrict far_power, float* __restrict mid_power, float* __restrict side_power,
                    float* __restrict cross_re, float* __restrict cross_im, float* __restrict ipd_cos,
                    float* __restrict ipd_sin) {
  const int half = n / 2;
  const stereo::BinRows rows{near_power, far_power, mid_power, side_power, cross_re, cross_im};
  stereo::bin_cues(fft::Complex<Real>{near[0], Real(0)}, fft::Complex<Real>{far[0], Real(0)}, 0, rows, ipd_cos,
                   ipd_sin);
  for (int k = 1; k < half; ++k) {  // the stores spelled out: through `rows` the vectoriser loses __restrict
    const stereo::BinCue c = stereo::bin_cue(fft::Complex<Real>{near[2 * k - 1], near[2 * k]},
                                             fft::Complex<Real>{far[2 * k - 1], far[2 * k]});
    near_power[k] = c.near_power;
    far_power[k] = c.far_power;
    mid_power[k] = c.mid_power;
    side_power[k] = c.side_power;
    cross_re[k] = c.cross_re;
    cross_im[k] = c.cross_im;
    ipd_cos[k] = c.ipd_cos;
    ipd_sin[k] = c.ipd_sin;
  }
  stereo::bin_cues(fft::Complex<Real>{near[n - 1], Real(0)}, fft::Complex<Real>{far[n - 1], Real(0)}, half, rows,
                   ipd_cos, ipd_sin);
}

// stereo::band_cue over a frame's bands, from its band sums (one array per sum),
// into the 7 channels' rows (__restrict as above).
inline void frame_band_cues(const float* __restrict near, const float* __restrict far,
                            const float* __restrict cross_re, const float* __restrict cross_im,
                            const float* __restrict mid, const float* __restrict side, int n_mels,
                            float* __restrict near_db, float* __restrict far_db, float* __restrict ild,
                            float* __restrict ipd_cos, float* __restrict ipd_sin, float* __restrict mid_db,
                            float* __restrict side_db) {
  for (int m = 0; m < n_mels; ++m) {
    const stereo::BandCue c =
        stereo::band_cue(stereo::BandSums{near[m], far[m], cross_re[m], cross_im[m], mid[m], side[m]});
    near_db[m] = c.channel[0];
    far_db[m] = c.channel[1];
    ild[m] = c.channel[2];
    ipd_cos[m] = c.channel[3];
    ipd_sin[m] = c.channel[4];
    mid_db[m] = c.channel[5];
    side_db[m] = c.channel[6];
  }
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

  const int64_t channel_stride = frames * n_mels;

  cpu::parallel_for(batch * frames, kMinFramesPerThread, [&](int64_t begin, int64_t end) {
    std::vector<Real> near_spectrum(n), far_spectrum(n);
    std::vector<float> bins(8 * n_bins), band_sums(6 * n_mels);
    const stereo::BinRows rows{bins.data(),          bins.data() + n_bins,     bins.data() + 2 * n_bins,
                               bins.data() + 3 * n_bins, bins.data() + 4 * n_bins, bins.data() + 5 * n_bins};
    float* g_re = bins.data() + 6 * n_bins;  // conj of the PHAT-weighted cross-spectrum
    float* g_im = bins.data() + 7 * n_bins;
    float* near_band = band_sums.data();
    float* far_band = near_band + n_mels;
    float* cross_re_band = far_band + n_mels;
    float* cross_im_band = cross_re_band + n_mels;
    float* mid_band = cross_im_band + n_mels;
    float* side_band = mid_band + n_mels;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / frames;
      const int64_t f = item % frames;
      centred_frame(stereo + (2 * b) * n_samples, n_samples, f, mc.hop, n, setup.window.data(), near_spectrum.data());
      centred_frame(stereo + (2 * b + 1) * n_samples, n_samples, f, mc.hop, n, setup.window.data(),
                    far_spectrum.data());
      setup.fft.forward(near_spectrum.data());
      setup.fft.forward(far_spectrum.data());
      frame_bin_cues(near_spectrum.data(), far_spectrum.data(), n, rows.near_power, rows.far_power, rows.mid_power,
                     rows.side_power, rows.cross_re, rows.cross_im, ipd + ((2 * b) * frames + f) * n_bins,
                     ipd + ((2 * b + 1) * frames + f) * n_bins);
      // The band sums in one pass over each band's bins, then the logs and phasors over all bands (vectorised).
      for (int m = 0; m < n_mels; ++m) {
        const stereo::BandSums sums =
            stereo::band_sums(rows, bank.first_bin.data(), bank.offset.data(), bank.weight.data(), m);
        near_band[m] = sums.near;
        far_band[m] = sums.far;
        cross_re_band[m] = sums.cross_re;
        cross_im_band[m] = sums.cross_im;
        mid_band[m] = sums.mid;
        side_band[m] = sums.side;
      }
      float* out = bands + (b * kStereoBandChannels * frames + f) * n_mels;  // channel 0, band 0
      frame_band_cues(near_band, far_band, cross_re_band, cross_im_band, mid_band, side_band, n_mels, out,
                      out + channel_stride, out + 2 * channel_stride, out + 3 * channel_stride,
                      out + 4 * channel_stride, out + 5 * channel_stride, out + 6 * channel_stride);

      // GCC-PHAT: n r = the unnormalised inverse transform of G = conj(conj G).
      for (int k = 0; k < n_bins; ++k) {
        stereo::phat_conj_weighted(rows.cross_re[k], rows.cross_im[k], g_re[k], g_im[k]);
        g_im[k] = -g_im[k];
      }
      Real* correlation = near_spectrum.data();  // free again
      setup.fft.join(g_re, g_im, correlation);
      setup.fft.backward(correlation);
      float best_value;
      int best_lag;
      stereo::gcc_peak(correlation, n, max_lag, best_value, best_lag);
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
