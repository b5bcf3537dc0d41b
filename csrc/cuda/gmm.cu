// CUDA twin of csrc/cpu/gmm.cpp: per-sample diagonal-GMM log-likelihood.
//
// A setup kernel (one block per component) turns the variances into
// precisions and the constants c_k = log w_k - 1/2 sum_d log(2 pi var_kd), in
// a stream-ordered scratch buffer. The main kernel gives one warp to each
// query: lanes stride over the features, the quadratic term is reduced over
// the warp in float64, and lane 0 folds the components into a running
// log-sum-exp. Per-element math is shared with the CPU (asdx/gmm.h).
#include <cuda_runtime.h>

#include "asdx/gmm.h"
#include "cuda_utils.h"

namespace asdx::gmm {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <class T>
__global__ void setup_kernel(const double* __restrict__ log_weights, const T* __restrict__ variances, int64_t dims,
                             T* __restrict__ precisions, double* __restrict__ constants) {
  __shared__ double reduce[kThreads];
  const int64_t comp = blockIdx.x;
  double log_det = 0.0;
  for (int64_t d = threadIdx.x; d < dims; d += blockDim.x) {
    const double v = static_cast<double>(variances[comp * dims + d]);
    log_det += log(2.0 * kPi * v);
    precisions[comp * dims + d] = static_cast<T>(1.0 / v);
  }
  reduce[threadIdx.x] = log_det;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) reduce[threadIdx.x] += reduce[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) constants[comp] = log_weights[comp] - 0.5 * reduce[0];
}

template <class T>
__global__ void loglik_kernel(const T* __restrict__ queries, int64_t n, int64_t dims, const T* __restrict__ means,
                              const T* __restrict__ precisions, const double* __restrict__ constants, int64_t k,
                              double* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / kWarp) + threadIdx.x / kWarp;
  if (row >= n) return;  // whole warps leave together
  const T* x = queries + row * dims;
  OnlineLogSumExp lse;
  for (int64_t c = 0; c < k; ++c) {
    const T* m = means + c * dims;
    const T* p = precisions + c * dims;
    T partial = T(0);
    for (int64_t d = lane; d < dims; d += kWarp) partial += weighted_square(x[d], m[d], p[d]);
    double quad = static_cast<double>(partial);
    for (int offset = kWarp / 2; offset > 0; offset >>= 1) quad += __shfl_down_sync(0xffffffffu, quad, offset);
    if (lane == 0) lse.add(component_log_density(constants[c], quad));
  }
  if (lane == 0) out[row] = lse.value();
}

template <class T>
void launch(const T* queries, int64_t n, int64_t dims, const double* log_weights, const T* means, const T* variances,
            int64_t k, double* out, void* stream_ptr) {
  if (n <= 0 || k <= 0) return;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const size_t precision_bytes = (static_cast<size_t>(k * dims) * sizeof(T) + 15) / 16 * 16;
  unsigned char* scratch = nullptr;
  ASDX_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&scratch), precision_bytes + k * sizeof(double), stream));
  T* precisions = reinterpret_cast<T*>(scratch);
  double* constants = reinterpret_cast<double*>(scratch + precision_bytes);
  setup_kernel<T><<<static_cast<unsigned>(k), kThreads, 0, stream>>>(log_weights, variances, dims, precisions,
                                                                     constants);
  const cudaError_t setup_status = cudaGetLastError();
  if (setup_status == cudaSuccess) {
    const int64_t rows_per_block = kThreads / kWarp;
    const unsigned blocks = static_cast<unsigned>((n + rows_per_block - 1) / rows_per_block);
    loglik_kernel<T><<<blocks, kThreads, 0, stream>>>(queries, n, dims, means, precisions, constants, k, out);
  }
  const cudaError_t status = setup_status != cudaSuccess ? setup_status : cudaGetLastError();
  cudaFreeAsync(scratch, stream);
  ASDX_CUDA_CHECK(status);
}

}  // namespace

void gmm_diag_loglik_cuda(const float* queries, int64_t n, int64_t dims, const double* log_weights,
                          const float* means, const float* variances, int64_t k, double* out, void* stream) {
  launch(queries, n, dims, log_weights, means, variances, k, out, stream);
}

void gmm_diag_loglik_cuda(const double* queries, int64_t n, int64_t dims, const double* log_weights,
                          const double* means, const double* variances, int64_t k, double* out, void* stream) {
  launch(queries, n, dims, log_weights, means, variances, k, out, stream);
}

}  // namespace asdx::gmm
