// CPU near/far residual (view "w1", asdx/stereo_view.h): one work item per clip, since the
// transfer H of a bin needs all of the clip's frames. Per clip: the joint scale, a real FFT
// (pocketfft, real_fft.h) of every near and far frame, the per-bin sums, H, then Y = C - H F,
// inverse FFT in place and the normalised overlap-add.
//
// Also the CUDA kernels' schedule on the host (stereo_view_w1_radix2_host), for the tests.
#include <algorithm>
#include <cmath>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend_tables.h"
#include "asdx/mel.h"
#include "asdx/stereo_view.h"
#include "asdx/window.h"
#include "parallel.h"
#include "real_fft.h"

namespace asdx::frontend {
namespace {

using stereo_view::kBins;
using stereo_view::kNfft;

float clip_peak(const float* clip, int64_t n_values) {
  float peak = 0.0f;
  for (int64_t i = 0; i < n_values; ++i) peak = std::max(peak, std::fabs(clip[i]));
  return peak;
}

struct NoBarrier {
  void operator()() const {}
};

}  // namespace

void stereo_view_w1_cpu(const float* stereo, int64_t batch, int64_t n_samples, float* out) {
  const int64_t frames = stereo_view::frames(n_samples);
  const std::vector<double> window_double = window::periodic_hann(kNfft);
  const std::vector<float> window(window_double.begin(), window_double.end());
  const cpu::RealFft<float> fft(kNfft);

  cpu::parallel_for(batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> near_spectra(static_cast<size_t>(frames) * kNfft), far_spectra(near_spectra.size());
    std::vector<stereo_view::BinSums> sums(kBins);
    std::vector<fft::Complex<float>> h(kBins);
    for (int64_t b = begin; b < end; ++b) {
      const float* near = stereo + 2 * b * n_samples;
      const float* far = near + n_samples;
      const float scale = stereo_view::joint_scale(clip_peak(near, 2 * n_samples));
      for (int64_t t = 0; t < frames; ++t) {
        float* c = near_spectra.data() + t * kNfft;
        float* f = far_spectra.data() + t * kNfft;
        for (int i = 0; i < kNfft; ++i) {
          c[i] = stereo_view::frame_sample(near, n_samples, t, i, scale, window.data());
          f[i] = stereo_view::frame_sample(far, n_samples, t, i, scale, window.data());
        }
        fft.forward(c);
        fft.forward(f);
      }
      std::fill(sums.begin(), sums.end(), stereo_view::BinSums{});
      for (int64_t t = 0; t < frames; ++t) {
        const float* c = near_spectra.data() + t * kNfft;
        const float* f = far_spectra.data() + t * kNfft;
        for (int k = 0; k < kBins; ++k) stereo_view::accumulate(fft.bin(c, k), fft.bin(f, k), sums[k]);
      }
      for (int k = 0; k < kBins; ++k) h[k] = stereo_view::transfer(sums[k]);
      for (int64_t t = 0; t < frames; ++t) {
        float* c = near_spectra.data() + t * kNfft;
        const float* f = far_spectra.data() + t * kNfft;
        for (int k = 0; k < kBins; ++k) {
          const fft::Complex<float> y = stereo_view::residual(fft.bin(c, k), fft.bin(f, k), h[k], k);
          fft.set_bin(c, k, y.re, y.im);
        }
        fft.backward(c);
      }
      for (int64_t i = 0; i < n_samples; ++i) {
        out[b * n_samples + i] = stereo_view::overlap_add(near_spectra.data(), kNfft, frames, i, window.data(), scale);
      }
    }
  });
}

void stereo_view_w1_radix2_host(const float* stereo, int64_t batch, int64_t n_samples, float* out) {
  const int64_t frames = stereo_view::frames(n_samples);
  const TableBlob blob = logmel_tables<float>(LogmelConfig{});  // n_fft 1024, periodic Hann: what the kernels read
  const TableView<float> t = view_tables<float>(blob.bytes.data(), blob.offsets.data());
  std::vector<float> re(kNfft), im(kNfft), time(static_cast<size_t>(frames) * kNfft);
  std::vector<fft::Complex<float>> c(static_cast<size_t>(frames) * kBins), f(c.size()), h(kBins);
  for (int64_t b = 0; b < batch; ++b) {
    const float* near = stereo + 2 * b * n_samples;
    const float* far = near + n_samples;
    const float scale = stereo_view::joint_scale(clip_peak(near, 2 * n_samples));
    for (int64_t frame = 0; frame < frames; ++frame) {
      stereo_view::analyse_frame(near, far, n_samples, frame, scale, t.window, t.twiddle_re, t.twiddle_im,
                                 t.bit_reversal, re.data(), im.data(), c.data() + frame * kBins,
                                 f.data() + frame * kBins, 0, 1, NoBarrier{});
    }
    for (int k = 0; k < kBins; ++k) {
      stereo_view::BinSums sums;
      for (int64_t frame = 0; frame < frames; ++frame) {
        stereo_view::accumulate(c[frame * kBins + k], f[frame * kBins + k], sums);
      }
      h[k] = stereo_view::transfer(sums);
    }
    for (int64_t frame = 0; frame < frames; ++frame) {
      stereo_view::synthesise_frame(c.data() + frame * kBins, f.data() + frame * kBins, h.data(), t.twiddle_re,
                                    t.twiddle_im, t.bit_reversal, re.data(), im.data(), time.data() + frame * kNfft, 0,
                                    1, NoBarrier{});
    }
    for (int64_t i = 0; i < n_samples; ++i) {
      out[b * n_samples + i] = stereo_view::overlap_add(time.data(), kNfft, frames, i, t.window, scale);
    }
  }
}

int64_t stereo_view_scratch_bytes(int64_t batch, int64_t n_samples) {
  const int64_t frames = stereo_view::frames(n_samples);
  auto aligned = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  return aligned(batch * 4)                                              // scales
         + 2 * aligned(batch * frames * kBins * 8)                       // near and far spectra
         + aligned(batch * kBins * 8)                                    // H
         + aligned(batch * frames * kNfft * 4);                          // time frames
}

}  // namespace asdx::frontend
