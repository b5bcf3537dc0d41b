// CUDA twins of csrc/cpu/frontend.cpp: one thread block per frame (or per pair
// of real frames packed into one complex FFT), the FFT done in shared memory.
// Per-element math comes from the same headers as the CPU code.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/mel.h"
#include "asdx/spectral.h"
#include "asdx/window.h"
#include "cuda_utils.h"

namespace asdx::frontend {
namespace {

constexpr int kThreads = 256;

struct Tables {
  const double* twiddle_re;
  const double* twiddle_im;
  const int* bit_reversal;
  const double* window;
  const int* first_bin;
  const int* offset;
  const float* weight;
};

Tables upload_tables(cuda::DeviceBlob& blob, const fft::Tables& fft_tables, const std::vector<double>& window,
                     const mel::SparseFilterbank& bank) {
  const size_t tw_re = blob.add(fft_tables.twiddle_re);
  const size_t tw_im = blob.add(fft_tables.twiddle_im);
  const size_t rev = blob.add(fft_tables.bit_reversal);
  const size_t win = blob.add(window);
  const size_t first = blob.add(bank.first_bin);
  const size_t offset = blob.add(bank.offset);
  const size_t weight = blob.add(bank.weight);
  blob.upload();
  return Tables{blob.at<double>(tw_re), blob.at<double>(tw_im), blob.at<int>(rev), blob.at<double>(win),
                blob.at<int>(first), blob.at<int>(offset), blob.at<float>(weight)};
}

// In-place FFT of bit-reversed re/im in shared memory; all threads of the block take part.
__device__ void block_fft(double* re, double* im, int n, const Tables& t) {
  for (int h = 1; h < n; h <<= 1) {
    for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
      const int j = i & (h - 1);
      const int a = ((i - j) << 1) + j;
      fft::butterfly(re[a], im[a], re[a + h], im[a + h], t.twiddle_re[h - 1 + j], t.twiddle_im[h - 1 + j]);
    }
    __syncthreads();
  }
}

__device__ void unpack_powers(const double* re, const double* im, int n, float* power_a, float* power_b) {
  for (int k = threadIdx.x; k <= n / 2; k += blockDim.x) {
    const int mirror = (n - k) & (n - 1);
    fft::Complex a, b;
    fft::unpack_two_real(re[k], im[k], re[mirror], im[mirror], a, b);
    power_a[k] = fft::squared_magnitude(a);
    power_b[k] = fft::squared_magnitude(b);
  }
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

__global__ void logmel_kernel(const float* signals, int64_t n_samples, int64_t frames, int64_t pairs, int n, int hop,
                              int n_mels, Tables t, float* out) {
  extern __shared__ double shared[];
  double* re = shared;
  double* im = re + n;
  float* power_a = reinterpret_cast<float*>(im + n);
  float* power_b = power_a + n / 2 + 1;
  const int64_t s = blockIdx.x / pairs;
  const int64_t t0 = 2 * (blockIdx.x % pairs);
  const bool has_second = t0 + 1 < frames;
  const float* signal = signals + s * n_samples;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = t.bit_reversal[i];
    re[r] = spectral::centred_sample(signal, n_samples, t0, i, hop, n) * t.window[i];
    im[r] = has_second ? spectral::centred_sample(signal, n_samples, t0 + 1, i, hop, n) * t.window[i] : 0.0f;
  }
  __syncthreads();
  block_fft(re, im, n, t);
  unpack_powers(re, im, n, power_a, power_b);
  __syncthreads();
  for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
    float* row = out + (s * frames + t0) * n_mels;
    row[m] = spectral::power_to_db(mel::band_sum(power_a, t.first_bin, t.offset, t.weight, m));
    if (has_second) row[n_mels + m] = spectral::power_to_db(mel::band_sum(power_b, t.first_bin, t.offset, t.weight, m));
  }
}

__global__ void kaldi_kernel(const float* signals, int64_t n_samples, int64_t frames, int64_t pairs, int n,
                             int length, int shift, int n_mels, double preemphasis, bool beats_normalise, Tables t,
                             float* out) {
  extern __shared__ double shared[];
  double* re = shared;
  double* im = re + n;
  double* frame = im + n;  // the frame's scaled samples
  float* power_a = reinterpret_cast<float*>(frame + length);
  float* power_b = power_a + n / 2 + 1;
  __shared__ double scratch[kThreads];
  const int64_t s = blockIdx.x / pairs;
  const int64_t t0 = 2 * (blockIdx.x % pairs);
  const bool has_second = t0 + 1 < frames;
  const float* signal = signals + s * n_samples;
  for (int f = 0; f < 2; ++f) {
    double* target = f == 0 ? re : im;
    if (f == 1 && !has_second) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) target[i] = 0.0;
      break;
    }
    const float* source = signal + (t0 + f) * shift;
    double partial = 0.0;
    for (int i = threadIdx.x; i < length; i += blockDim.x) {
      frame[i] = source[i] * spectral::kKaldiInt16Scale;
      partial += frame[i];
    }
    const double mean = block_sum(partial, scratch) / length;  // also a barrier for frame[]
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      target[t.bit_reversal[i]] =
          i < length ? spectral::kaldi_prepared_sample(frame, i, mean, preemphasis) * t.window[i] : 0.0;
    }
    __syncthreads();
  }
  __syncthreads();
  block_fft(re, im, n, t);
  unpack_powers(re, im, n, power_a, power_b);
  __syncthreads();
  for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
    for (int f = 0; f < (has_second ? 2 : 1); ++f) {
      const float* power = f == 0 ? power_a : power_b;
      const float value = spectral::kaldi_log(mel::band_sum(power, t.first_bin, t.offset, t.weight, m));
      out[(s * frames + t0 + f) * n_mels + m] = beats_normalise ? spectral::beats_normalise(value) : value;
    }
  }
}

__global__ void stereo_kernel(const float* stereo, int64_t n_samples, int64_t frames, int n, int hop, int n_mels,
                              int max_lag, Tables t, float* bands, float* ipd, float* gcc) {
  extern __shared__ double shared[];
  const int n_bins = n / 2 + 1;
  double* re = shared;
  double* im = re + n;
  float* near_power = reinterpret_cast<float*>(im + n);
  float* far_power = near_power + n_bins;
  float* mid_power = far_power + n_bins;
  float* side_power = mid_power + n_bins;
  float* cross_re = side_power + n_bins;
  float* cross_im = cross_re + n_bins;
  __shared__ float best_values[kThreads];
  __shared__ int best_lags[kThreads];

  const int64_t b = blockIdx.x / frames;
  const int64_t frame = blockIdx.x % frames;
  const float* near = stereo + (2 * b) * n_samples;
  const float* far = stereo + (2 * b + 1) * n_samples;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int r = t.bit_reversal[i];
    re[r] = spectral::centred_sample(near, n_samples, frame, i, hop, n) * t.window[i];
    im[r] = spectral::centred_sample(far, n_samples, frame, i, hop, n) * t.window[i];
  }
  __syncthreads();
  block_fft(re, im, n, t);

  float* ipd_cos = ipd + ((2 * b) * frames + frame) * n_bins;
  float* ipd_sin = ipd + ((2 * b + 1) * frames + frame) * n_bins;
  for (int k = threadIdx.x; k < n_bins; k += blockDim.x) {
    const int mirror = (n - k) & (n - 1);
    fft::Complex xl, xr;
    fft::unpack_two_real(re[k], im[k], re[mirror], im[mirror], xl, xr);
    near_power[k] = fft::squared_magnitude(xl);
    far_power[k] = fft::squared_magnitude(xr);
    mid_power[k] = 0.5f * fft::squared_magnitude({xl.re + xr.re, xl.im + xr.im});
    side_power[k] = 0.5f * fft::squared_magnitude({xl.re - xr.re, xl.im - xr.im});
    cross_re[k] = static_cast<float>(xl.re * xr.re + xl.im * xr.im);
    cross_im[k] = static_cast<float>(xl.im * xr.re - xl.re * xr.im);
    spectral::unit_phasor(cross_re[k], cross_im[k], ipd_cos[k], ipd_sin[k]);
  }
  __syncthreads();

  for (int m = threadIdx.x; m < n_mels; m += blockDim.x) {
    auto band = [&](int channel) -> float& {
      return bands[((b * kStereoBandChannels + channel) * frames + frame) * n_mels + m];
    };
    const float pn = mel::band_sum(near_power, t.first_bin, t.offset, t.weight, m);
    const float pf = mel::band_sum(far_power, t.first_bin, t.offset, t.weight, m);
    band(0) = spectral::power_to_db(pn);
    band(1) = spectral::power_to_db(pf);
    band(2) = spectral::ild_db(pn, pf);
    spectral::unit_phasor(mel::band_sum(cross_re, t.first_bin, t.offset, t.weight, m),
                          mel::band_sum(cross_im, t.first_bin, t.offset, t.weight, m), band(3), band(4));
    band(5) = spectral::power_to_db(mel::band_sum(mid_power, t.first_bin, t.offset, t.weight, m));
    band(6) = spectral::power_to_db(mel::band_sum(side_power, t.first_bin, t.offset, t.weight, m));
  }
  // GCC-PHAT input: conj G, see the CPU version. re/im are free again after the barrier above.
  for (int k = threadIdx.x; k < n; k += blockDim.x) {
    const bool upper = k > n / 2;
    const int source = upper ? n - k : k;
    const float cr = cross_re[source];
    const float ci = cross_im[source];
    const float scale = 1.0f / (sqrtf(cr * cr + ci * ci) + spectral::kPhatFloor);
    const int r = t.bit_reversal[k];
    re[r] = cr * scale;
    im[r] = (upper ? -ci : ci) * scale;
  }
  __syncthreads();
  block_fft(re, im, n, t);

  float best_value = static_cast<float>(re[0]);
  int best_lag = 0;
  for (int lag = -max_lag + static_cast<int>(threadIdx.x); lag <= max_lag; lag += blockDim.x) {
    const float value = static_cast<float>(re[(lag + n) & (n - 1)]);
    if (spectral::gcc_peak_better(value, lag, best_value, best_lag)) {
      best_value = value;
      best_lag = lag;
    }
  }
  best_values[threadIdx.x] = best_value;
  best_lags[threadIdx.x] = best_lag;
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
  if (threadIdx.x == 0) {
    float* peak = gcc + (b * frames + frame) * 2;
    peak[0] = static_cast<float>(best_lags[0]);
    peak[1] = best_values[0] / static_cast<float>(n);
  }
}

void check_launch() { ASDX_CUDA_CHECK(cudaGetLastError()); }

}  // namespace

void logmel_dcase_cuda(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config,
                       float* out, void* stream_handle) {
  const int n = config.n_fft;
  const int64_t frames = logmel_frames(config, n_samples);
  const int64_t pairs = (frames + 1) / 2;
  if (n_signals == 0 || pairs == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  cuda::DeviceBlob blob(stream);
  const Tables t = upload_tables(blob, fft::make_tables(n), window::periodic_hann(n),
                                 mel::slaney_filterbank(config.sample_rate, n, config.n_mels, config.fmin, config.fmax));
  const size_t shared_bytes = sizeof(double) * 2 * n + sizeof(float) * 2 * (n / 2 + 1);
  cuda::allow_shared_memory(logmel_kernel, shared_bytes);
  logmel_kernel<<<static_cast<unsigned>(n_signals * pairs), kThreads, shared_bytes, stream>>>(
      signals, n_samples, frames, pairs, n, config.hop, config.n_mels, t, out);
  check_launch();
}

void kaldi_fbank_cuda(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config,
                      float* out, void* stream_handle) {
  const int n = config.padded_length;
  const int64_t frames = kaldi_frames(config, n_samples);
  const int64_t pairs = (frames + 1) / 2;
  if (n_signals == 0 || pairs == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  cuda::DeviceBlob blob(stream);
  const Tables t = upload_tables(
      blob, fft::make_tables(n), window::povey(config.frame_length),
      mel::kaldi_filterbank(config.sample_rate, n, config.n_mels, config.low_freq, config.high_freq));
  const size_t shared_bytes = sizeof(double) * (2 * n + config.frame_length) + sizeof(float) * 2 * (n / 2 + 1);
  cuda::allow_shared_memory(kaldi_kernel, shared_bytes);
  kaldi_kernel<<<static_cast<unsigned>(n_signals * pairs), kThreads, shared_bytes, stream>>>(
      signals, n_samples, frames, pairs, n, config.frame_length, config.frame_shift, config.n_mels, config.preemphasis,
      config.beats_normalise, t, out);
  check_launch();
}

void stereo_features_cuda(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config,
                          float* bands, float* ipd, float* gcc, void* stream_handle) {
  const LogmelConfig& mc = config.mel;
  const int n = mc.n_fft;
  const int64_t frames = logmel_frames(mc, n_samples);
  if (batch == 0 || frames == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  cuda::DeviceBlob blob(stream);
  const Tables t = upload_tables(blob, fft::make_tables(n), window::periodic_hann(n),
                                 mel::slaney_filterbank(mc.sample_rate, n, mc.n_mels, mc.fmin, mc.fmax));
  const size_t shared_bytes = sizeof(double) * 2 * n + sizeof(float) * 6 * (n / 2 + 1);
  cuda::allow_shared_memory(stereo_kernel, shared_bytes);
  const int max_lag = std::min(config.max_lag, n / 2 - 1);
  stereo_kernel<<<static_cast<unsigned>(batch * frames), kThreads, shared_bytes, stream>>>(
      stereo, n_samples, frames, n, mc.hop, mc.n_mels, max_lag, t, bands, ipd, gcc);
  check_launch();
}

}  // namespace asdx::frontend
