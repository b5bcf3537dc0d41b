// CUDA twins of csrc/cpu/frontend.cpp: one thread block per frame (or per pair
// of real frames packed into one complex FFT), the FFT done in shared memory,
// in double or float (Real). Everything per element and per bin comes from the
// headers the CPU code uses (asdx/fft.h, spectral.h, mel.h, stereo.h); this
// file only distributes it over threads. Tables arrive already on the device
// (cached by the Python caller), outputs are the caller's torch tensors.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/frontend_tables.h"
#include "asdx/mel.h"
#include "asdx/spectral.h"
#include "asdx/stereo.h"
#include "cuda_utils.h"

namespace asdx::frontend {
namespace {

constexpr int kThreads = 256;

// Dynamic shared memory, carved into typed arrays by each kernel.
extern __shared__ __align__(16) unsigned char dynamic_shared[];

struct BlockBarrier {
  __device__ void operator()() const { __syncthreads(); }
};

// In-place FFT of bit-reversed re/im in shared memory (asdx/fft.h); all threads of the block take part.
template <class Real>
__device__ void block_fft(Real* re, Real* im, int n, const TableView<Real>& t) {
  fft::forward(re, im, n, t.twiddle_re, t.twiddle_im, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x),
               BlockBarrier{});
}

__device__ double block_sum(double value, double* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = scratch[0];
  __syncthreads();
  return total;
}

template <class Real>
__global__ void __launch_bounds__(kThreads) logmel_kernel(const float* signals, int64_t n_samples, int64_t frames,
                                                          int64_t pairs, int n, int hop, int n_mels,
                                                          TableView<Real> t, float* out) {
  Real* re = reinterpret_cast<Real*>(dynamic_shared);
  Real* im = re + n;
  float* power_a = reinterpret_cast<float*>(im + n);
  float* power_b = power_a + n / 2 + 1;
  const int64_t s = blockIdx.x / pairs;
  const int64_t t0 = 2 * (blockIdx.x % pairs);
  const bool has_second = t0 + 1 < frames;
  const float* signal = signals + s * n_samples;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = t.bit_reversal[i];
    re[r] = spectral::centred_sample<Real>(signal, n_samples, t0, i, hop, n) * t.window[i];
    im[r] = has_second ? spectral::centred_sample<Real>(signal, n_samples, t0 + 1, i, hop, n) * t.window[i] : Real(0);
  }
  __syncthreads();
  block_fft(re, im, n, t);
  for (int k = threadIdx.x; k <= n / 2; k += blockDim.x) fft::unpack_powers_at(re, im, n, k, power_a, power_b);
  __syncthreads();
  float* row = out + (s * frames + t0) * n_mels;
  for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
    row[m] = spectral::power_to_db(mel::band_sum(power_a, t.first_bin, t.band_offset, t.weight, m));
    if (has_second) {
      row[n_mels + m] = spectral::power_to_db(mel::band_sum(power_b, t.first_bin, t.band_offset, t.weight, m));
    }
  }
}

template <class Real>
__global__ void __launch_bounds__(kThreads) kaldi_kernel(const float* signals, int64_t n_samples, int64_t frames,
                                                         int64_t pairs, int n, int length, int shift, int n_mels,
                                                         Real preemphasis, bool beats_normalise, TableView<Real> t,
                                                         float* out) {
  Real* re = reinterpret_cast<Real*>(dynamic_shared);
  Real* im = re + n;
  Real* frame = im + n;  // the frame's scaled samples
  float* power_a = reinterpret_cast<float*>(frame + length);
  float* power_b = power_a + n / 2 + 1;
  __shared__ double scratch[kThreads];
  const int64_t s = blockIdx.x / pairs;
  const int64_t t0 = 2 * (blockIdx.x % pairs);
  const bool has_second = t0 + 1 < frames;
  const float* signal = signals + s * n_samples;
  for (int f = 0; f < 2; ++f) {
    Real* target = f == 0 ? re : im;
    if (f == 1 && !has_second) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) target[i] = Real(0);
      break;
    }
    const float* source = signal + (t0 + f) * shift;
    double partial = 0.0;
    for (int i = threadIdx.x; i < length; i += blockDim.x) {
      frame[i] = static_cast<Real>(source[i] * spectral::kKaldiInt16Scale);
      partial += frame[i];
    }
    const Real mean = static_cast<Real>(block_sum(partial, scratch) / length);  // also a barrier for frame[]
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      target[t.bit_reversal[i]] =
          i < length ? spectral::kaldi_prepared_sample(frame, i, mean, preemphasis) * t.window[i] : Real(0);
    }
    __syncthreads();
  }
  __syncthreads();
  block_fft(re, im, n, t);
  for (int k = threadIdx.x; k <= n / 2; k += blockDim.x) fft::unpack_powers_at(re, im, n, k, power_a, power_b);
  __syncthreads();
  for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
    for (int f = 0; f < (has_second ? 2 : 1); ++f) {
      const float* power = f == 0 ? power_a : power_b;
      const float value = spectral::kaldi_log(mel::band_sum(power, t.first_bin, t.band_offset, t.weight, m));
      out[(s * frames + t0 + f) * n_mels + m] = beats_normalise ? spectral::beats_normalise(value) : value;
    }
  }
}

template <class Real>
__global__ void __launch_bounds__(kThreads) stereo_kernel(const float* stereo, int64_t n_samples, int64_t frames,
                                                          int n, int hop, int n_mels, int max_lag, TableView<Real> t,
                                                          float* bands, float* ipd, float* gcc) {
  const int n_bins = n / 2 + 1;
  Real* re = reinterpret_cast<Real*>(dynamic_shared);
  Real* im = re + n;
  float* bins = reinterpret_cast<float*>(im + n);
  const stereo::BinRows rows{bins, bins + n_bins, bins + 2 * n_bins, bins + 3 * n_bins, bins + 4 * n_bins,
                             bins + 5 * n_bins};
  __shared__ float best_values[kThreads];
  __shared__ int best_lags[kThreads];

  const int64_t b = blockIdx.x / frames;
  const int64_t frame = blockIdx.x % frames;
  const float* near = stereo + (2 * b) * n_samples;
  const float* far = stereo + (2 * b + 1) * n_samples;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = t.bit_reversal[i];
    re[r] = spectral::centred_sample<Real>(near, n_samples, frame, i, hop, n) * t.window[i];
    im[r] = spectral::centred_sample<Real>(far, n_samples, frame, i, hop, n) * t.window[i];
  }
  __syncthreads();
  block_fft(re, im, n, t);

  float* ipd_cos = ipd + ((2 * b) * frames + frame) * n_bins;
  float* ipd_sin = ipd + ((2 * b + 1) * frames + frame) * n_bins;
  for (int k = threadIdx.x; k < n_bins; k += blockDim.x) stereo::packed_bin_cues(re, im, n, k, rows, ipd_cos, ipd_sin);
  __syncthreads();

  float* band_out = bands + (b * kStereoBandChannels * frames + frame) * n_mels;
  for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
    stereo::band_cues(rows, t.first_bin, t.band_offset, t.weight, m, band_out + m, frames * n_mels);
  }
  // re/im are free again after the barrier above.
  for (int k = threadIdx.x; k < n; k += blockDim.x) stereo::phat_input(rows.cross_re, rows.cross_im, n, k, t.bit_reversal, re, im);
  __syncthreads();
  block_fft(re, im, n, t);

  // Each thread scans lags -max_lag + tid, + blockDim, ...; then a tree reduction in the same order.
  stereo::gcc_scan(re, n, -max_lag + static_cast<int>(threadIdx.x), blockDim.x, max_lag, best_values[threadIdx.x],
                   best_lags[threadIdx.x]);
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const int other = threadIdx.x + stride;
      if (spectral::gcc_peak_better(best_values[other], best_lags[other], best_values[threadIdx.x],
                                    best_lags[threadIdx.x])) {
        best_values[threadIdx.x] = best_values[other];
        best_lags[threadIdx.x] = best_lags[other];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) stereo::write_gcc_peak(best_values[0], best_lags[0], n, gcc + (b * frames + frame) * 2);
}

// Launches kernel<<<blocks, kThreads, shared_bytes, stream>>>(args...) with the shared-memory
// limit checked first and launch errors told apart from earlier ones.
template <class Kernel, class... Args>
void launch(const char* name, Kernel kernel, int64_t blocks, size_t shared_bytes, void* stream, Args... args) {
  if (blocks > 2147483647) throw std::invalid_argument(std::string(name) + ": too many frames for one launch");
  cuda::reserve_shared_memory(kernel, shared_bytes, name);
  cuda::check_before_launch(name);
  kernel<<<static_cast<unsigned>(blocks), kThreads, shared_bytes, static_cast<cudaStream_t>(stream)>>>(args...);
  cuda::check_after_launch(name);
}

template <class Real>
void logmel_launch(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& c,
                   const unsigned char* tables, const int64_t* offsets, float* out, void* stream) {
  const int n = c.n_fft;
  const int64_t frames = logmel_frames(c, n_samples);
  const int64_t pairs = (frames + 1) / 2;
  if (n_signals == 0 || pairs == 0) return;
  const size_t shared_bytes = sizeof(Real) * 2 * n + sizeof(float) * 2 * (n / 2 + 1);
  launch("logmel_dcase", logmel_kernel<Real>, n_signals * pairs, shared_bytes, stream, signals, n_samples, frames,
         pairs, n, c.hop, c.n_mels, view_tables<Real>(tables, offsets), out);
}

template <class Real>
void kaldi_launch(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& c,
                  const unsigned char* tables, const int64_t* offsets, float* out, void* stream) {
  const int n = c.padded_length;
  const int64_t frames = kaldi_frames(c, n_samples);
  const int64_t pairs = (frames + 1) / 2;
  if (n_signals == 0 || pairs == 0) return;
  const size_t shared_bytes = sizeof(Real) * (2 * n + c.frame_length) + sizeof(float) * 2 * (n / 2 + 1);
  launch("kaldi_fbank", kaldi_kernel<Real>, n_signals * pairs, shared_bytes, stream, signals, n_samples, frames, pairs,
         n, c.frame_length, c.frame_shift, c.n_mels, static_cast<Real>(c.preemphasis), c.beats_normalise,
         view_tables<Real>(tables, offsets), out);
}

template <class Real>
void stereo_launch(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& c,
                   const unsigned char* tables, const int64_t* offsets, float* bands, float* ipd, float* gcc,
                   void* stream) {
  const int n = c.mel.n_fft;
  const int64_t frames = logmel_frames(c.mel, n_samples);
  if (batch == 0 || frames == 0) return;
  const size_t shared_bytes = sizeof(Real) * 2 * n + sizeof(float) * 6 * (n / 2 + 1);
  const int max_lag = std::min(c.max_lag, n / 2 - 1);
  launch("stereo_features", stereo_kernel<Real>, batch * frames, shared_bytes, stream, stereo, n_samples, frames, n,
         c.mel.hop, c.mel.n_mels, max_lag, view_tables<Real>(tables, offsets), bands, ipd, gcc);
}

}  // namespace

void logmel_dcase_cuda(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config,
                       bool float32, const unsigned char* tables, const int64_t* offsets, float* out, void* stream) {
  with_precision(float32, [&](auto real) {
    logmel_launch<decltype(real)>(signals, n_signals, n_samples, config, tables, offsets, out, stream);
  });
}

void kaldi_fbank_cuda(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config,
                      bool float32, const unsigned char* tables, const int64_t* offsets, float* out, void* stream) {
  with_precision(float32, [&](auto real) {
    kaldi_launch<decltype(real)>(signals, n_signals, n_samples, config, tables, offsets, out, stream);
  });
}

void stereo_features_cuda(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config,
                          bool float32, const unsigned char* tables, const int64_t* offsets, float* bands, float* ipd,
                          float* gcc, void* stream) {
  with_precision(float32, [&](auto real) {
    stereo_launch<decltype(real)>(stereo, batch, n_samples, config, tables, offsets, bands, ipd, gcc, stream);
  });
}

}  // namespace asdx::frontend
