// CUDA near/far residual (view "w1"): the per-element and per-bin math of asdx/stereo_view.h
// distributed over five launches on the caller's stream, with the FFTs in shared memory
// (asdx/fft.h, float32 as the recipe):
//   1. peak: one block per clip, the joint scale;
//   2. analysis: one block per (clip, frame), near + j far in one complex FFT, C and F unpacked;
//   3. transfer: one thread per (clip, bin), the sums over frames in float64, H;
//   4. synthesis: one block per (clip, frame), Y = C - H F inverted by a forward FFT of conj Y;
//   5. overlap-add: one thread per output sample (no atomics: deterministic).
// stereo_view_w1_radix2_host (csrc/cpu/stereo_view.cpp) runs steps 2 and 4 on the host for the tests.
#include <cuda_runtime.h>

#include <string>

#include "asdx/frontend_tables.h"
#include "asdx/stereo_view.h"
#include "cuda_utils.h"

namespace asdx::frontend {
namespace {

using stereo_view::kBins;
using stereo_view::kNfft;
using Complex = fft::Complex<float>;

constexpr int kThreads = 256;

struct BlockBarrier {
  __device__ void operator()() const { __syncthreads(); }
};

__global__ void __launch_bounds__(kThreads) peak_kernel(const float* stereo, int64_t n_samples, float* scales) {
  __shared__ float partial[kThreads];
  const float* clip = stereo + 2 * static_cast<int64_t>(blockIdx.x) * n_samples;
  float peak = 0.0f;
  for (int64_t i = threadIdx.x; i < 2 * n_samples; i += blockDim.x) peak = fmaxf(peak, fabsf(clip[i]));
  partial[threadIdx.x] = peak;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] = fmaxf(partial[threadIdx.x], partial[threadIdx.x + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) scales[blockIdx.x] = stereo_view::joint_scale(partial[0]);
}

__global__ void __launch_bounds__(kThreads) analysis_kernel(const float* stereo, int64_t n_samples, int64_t frames,
                                                            const float* scales, TableView<float> t, Complex* c,
                                                            Complex* f) {
  __shared__ float re[kNfft];
  __shared__ float im[kNfft];
  const int64_t b = blockIdx.x / frames;
  const int64_t frame = blockIdx.x % frames;
  const float* near = stereo + 2 * b * n_samples;
  stereo_view::analyse_frame(near, near + n_samples, n_samples, frame, scales[b], t.window, t.twiddle_re,
                             t.twiddle_im, t.bit_reversal, re, im, c + blockIdx.x * kBins, f + blockIdx.x * kBins,
                             static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), BlockBarrier{});
}

__global__ void __launch_bounds__(kThreads) transfer_kernel(const Complex* c, const Complex* f, int64_t batch,
                                                            int64_t frames, Complex* h) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= batch * kBins) return;
  const int64_t b = item / kBins;
  const int k = static_cast<int>(item % kBins);
  stereo_view::BinSums sums;
  for (int64_t frame = 0; frame < frames; ++frame) {
    const int64_t at = (b * frames + frame) * kBins + k;  // neighbouring threads read neighbouring bins
    stereo_view::accumulate(c[at], f[at], sums);
  }
  h[item] = stereo_view::transfer(sums);
}

__global__ void __launch_bounds__(kThreads) synthesis_kernel(const Complex* c, const Complex* f, const Complex* h,
                                                             int64_t frames, TableView<float> t, float* time) {
  __shared__ float re[kNfft];
  __shared__ float im[kNfft];
  const int64_t b = blockIdx.x / frames;
  stereo_view::synthesise_frame(c + blockIdx.x * kBins, f + blockIdx.x * kBins, h + b * kBins, t.twiddle_re,
                                t.twiddle_im, t.bit_reversal, re, im, time + blockIdx.x * kNfft,
                                static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), BlockBarrier{});
}

__global__ void __launch_bounds__(kThreads) overlap_kernel(const float* time, int64_t batch, int64_t n_samples,
                                                           int64_t frames, const float* scales, const float* window,
                                                           float* out) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= batch * n_samples) return;
  const int64_t b = item / n_samples;
  out[item] = stereo_view::overlap_add(time + b * frames * kNfft, kNfft, frames, item % n_samples, window, scales[b]);
}

template <class Kernel, class... Args>
void launch(const char* name, Kernel kernel, int64_t blocks, cudaStream_t stream, Args... args) {
  if (blocks > 2147483647) throw std::invalid_argument(std::string(name) + ": too many items for one launch");
  cuda::check_before_launch(name);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args...);
  cuda::check_after_launch(name);
}

int64_t aligned(int64_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void stereo_view_w1_cuda(const float* stereo, int64_t batch, int64_t n_samples, const unsigned char* tables,
                         const int64_t* table_offsets, unsigned char* scratch, float* out, void* stream_handle) {
  if (batch == 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t frames = stereo_view::frames(n_samples);
  const TableView<float> t = view_tables<float>(tables, table_offsets);
  // the layout of stereo_view_scratch_bytes
  float* scales = reinterpret_cast<float*>(scratch);
  Complex* c = reinterpret_cast<Complex*>(scratch + aligned(batch * 4));
  Complex* f = reinterpret_cast<Complex*>(reinterpret_cast<unsigned char*>(c) + aligned(batch * frames * kBins * 8));
  Complex* h = reinterpret_cast<Complex*>(reinterpret_cast<unsigned char*>(f) + aligned(batch * frames * kBins * 8));
  float* time = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(h) + aligned(batch * kBins * 8));

  launch("stereo_view peak", peak_kernel, batch, stream, stereo, n_samples, scales);
  launch("stereo_view analysis", analysis_kernel, batch * frames, stream, stereo, n_samples, frames,
         static_cast<const float*>(scales), t, c, f);
  launch("stereo_view transfer", transfer_kernel, (batch * kBins + kThreads - 1) / kThreads, stream,
         static_cast<const Complex*>(c), static_cast<const Complex*>(f), batch, frames, h);
  launch("stereo_view synthesis", synthesis_kernel, batch * frames, stream, static_cast<const Complex*>(c),
         static_cast<const Complex*>(f), static_cast<const Complex*>(h), frames, t, time);
  launch("stereo_view overlap-add", overlap_kernel, (batch * n_samples + kThreads - 1) / kThreads, stream,
         static_cast<const float*>(time), batch, n_samples, frames, static_cast<const float*>(scales), t.window, out);
}

}  // namespace asdx::frontend
