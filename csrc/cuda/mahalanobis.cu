// CUDA twin of csrc/cpu/mahalanobis.cpp: out[n][k] = ||L_k^T (q_n - mu_k)||^2.
//
// One thread block per (64-query tile, component). The block walks the
// 64-column tiles of L; for each it forms Y = X L over rows i >= the tile's
// first column (the triangle) with 16-row chunks of centred queries and of L
// staged in shared memory, each thread holding a 4x4 register tile of Y.
// Finished Y tiles are squared into per-thread float64 sums (add_square from
// the shared header), reduced over the 16 threads that share the queries.
#include <cuda_runtime.h>

#include "asdx/mahalanobis.h"
#include "cuda_utils.h"

namespace asdx::mahalanobis {
namespace {

constexpr int kTile = 64;     // queries and columns per block tile
constexpr int kChunk = 16;    // rows of L (dims) per shared-memory stage
constexpr int kMicro = 4;     // per-thread register tile is kMicro x kMicro
constexpr int kThreads = (kTile / kMicro) * (kTile / kMicro);  // 256

template <class T>
__global__ void __launch_bounds__(kThreads) mahalanobis_kernel(const T* __restrict__ queries, int64_t n, int64_t dims,
                                                               const T* __restrict__ means,
                                                               const T* __restrict__ factors, int64_t k,
                                                               T* __restrict__ out) {
  __shared__ T xs[kChunk][kTile + 1];  // centred queries, i-major
  __shared__ T ls[kChunk][kTile + 1];  // L rows, column tile
  __shared__ double partial[kTile][kTile / kMicro + 1];

  const int tid = threadIdx.x;
  const int tx = tid % (kTile / kMicro);  // column group
  const int ty = tid / (kTile / kMicro);  // query group
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t comp = blockIdx.y;
  const T* mean = means + comp * dims;
  const T* factor = factors + comp * dims * dims;

  double sums[kMicro];
  for (int q = 0; q < kMicro; ++q) sums[q] = 0.0;

  for (int64_t j0 = 0; j0 < dims; j0 += kTile) {
    T acc[kMicro][kMicro];
    for (int q = 0; q < kMicro; ++q)
      for (int c = 0; c < kMicro; ++c) acc[q][c] = T(0);

    for (int64_t i0 = j0; i0 < dims; i0 += kChunk) {
      for (int e = tid; e < kChunk * kTile; e += kThreads) {
        const int ii = e % kChunk, qq = e / kChunk;
        const int64_t i = i0 + ii, row = n0 + qq;
        xs[ii][qq] = (i < dims && row < n) ? queries[row * dims + i] - mean[i] : T(0);
      }
      for (int e = tid; e < kChunk * kTile; e += kThreads) {
        const int jj = e % kTile, ii = e / kTile;
        const int64_t i = i0 + ii, j = j0 + jj;
        ls[ii][jj] = (i < dims && j < dims && j <= i) ? factor[i * dims + j] : T(0);
      }
      __syncthreads();
#pragma unroll
      for (int ii = 0; ii < kChunk; ++ii) {
        T a[kMicro], b[kMicro];
#pragma unroll
        for (int q = 0; q < kMicro; ++q) a[q] = xs[ii][ty * kMicro + q];
#pragma unroll
        for (int c = 0; c < kMicro; ++c) b[c] = ls[ii][tx * kMicro + c];
#pragma unroll
        for (int q = 0; q < kMicro; ++q)
#pragma unroll
          for (int c = 0; c < kMicro; ++c) acc[q][c] += a[q] * b[c];
      }
      __syncthreads();
    }
    for (int q = 0; q < kMicro; ++q)
      for (int c = 0; c < kMicro; ++c) sums[q] = add_square(sums[q], acc[q][c]);
  }

  for (int q = 0; q < kMicro; ++q) partial[ty * kMicro + q][tx] = sums[q];
  __syncthreads();
  if (tid < kTile) {
    const int64_t row = n0 + tid;
    double total = 0.0;
    for (int g = 0; g < kTile / kMicro; ++g) total += partial[tid][g];
    if (row < n) out[row * k + comp] = static_cast<T>(total);
  }
}

template <class T>
void launch(const T* queries, int64_t n, int64_t dims, const T* means, const T* factors, int64_t k, T* out,
            void* stream) {
  if (n <= 0 || k <= 0) return;
  if (k > 65535) throw std::invalid_argument("mahalanobis_cuda: at most 65535 components");
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile), static_cast<unsigned>(k));
  cuda::check_before_launch("mahalanobis_kernel");
  mahalanobis_kernel<T><<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(queries, n, dims, means, factors,
                                                                                   k, out);
  cuda::check_after_launch("mahalanobis_kernel");
}

}  // namespace

void mahalanobis_cuda(const float* queries, int64_t n, int64_t dims, const float* means, const float* factors,
                      int64_t k, float* out, void* stream) {
  launch(queries, n, dims, means, factors, k, out, stream);
}

void mahalanobis_cuda(const double* queries, int64_t n, int64_t dims, const double* means, const double* factors,
                      int64_t k, double* out, void* stream) {
  launch(queries, n, dims, means, factors, k, out, stream);
}

}  // namespace asdx::mahalanobis
