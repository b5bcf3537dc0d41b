// CUDA twin of csrc/cpu/gmm.cpp: per-sample diagonal-GMM log-likelihood.
//
// A setup kernel (one block per component) turns the variances into
// precisions and the constants c_k = log w_k - 1/2 sum_d log(2 pi var_kd),
// with the same per-element functions as the CPU (log_normaliser_term,
// precision_of, component_constant), in a scratch buffer that the caller
// allocates (gmm_diag_scratch_bytes; torch's allocator). The main kernel gives one warp to each
// query: lanes stride over the features, the quadratic term is reduced over
// the warp in float64, and lane 0 folds the components into a running
// log-sum-exp. Per-element math is shared with the CPU (asdx/gmm.h).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>

#include "asdx/gmm.h"
#include "cuda_utils.h"

namespace asdx::gmm {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <class T>
__global__ void __launch_bounds__(kThreads)
    setup_kernel(const double* __restrict__ log_weights, const T* __restrict__ variances, int64_t dims,
                 T* __restrict__ precisions, double* __restrict__ constants) {
  __shared__ double reduce[kThreads];
  const int64_t comp = blockIdx.x;
  double log_terms = 0.0;
  for (int64_t d = threadIdx.x; d < dims; d += blockDim.x) {
    const T v = variances[comp * dims + d];
    log_terms += log_normaliser_term(static_cast<double>(v));
    precisions[comp * dims + d] = precision_of(v);
  }
  reduce[threadIdx.x] = log_terms;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) reduce[threadIdx.x] += reduce[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) constants[comp] = component_constant(log_weights[comp], reduce[0]);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    loglik_kernel(const T* __restrict__ queries, int64_t n, int64_t dims, const T* __restrict__ means,
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
            int64_t k, double* out, void* scratch_ptr, void* stream_ptr) {
  if (n <= 0 || k <= 0) return;
  constexpr int64_t kMaxBlocks = 2147483647;  // gridDim.x limit
  if (k > kMaxBlocks) throw std::invalid_argument("gmm_diag_loglik_cuda: too many components");
  const int64_t rows_per_block = kThreads / kWarp;
  const int64_t blocks = (n + rows_per_block - 1) / rows_per_block;
  if (blocks > kMaxBlocks) throw std::invalid_argument("gmm_diag_loglik_cuda: too many queries for one launch");
  if (scratch_ptr == nullptr || reinterpret_cast<uintptr_t>(scratch_ptr) % 16 != 0) {
    throw std::invalid_argument("gmm_diag_loglik_cuda: scratch must be a 16-byte aligned device buffer of "
                                "gmm_diag_scratch_bytes(k, dims, float32) bytes");
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  unsigned char* scratch = static_cast<unsigned char*>(scratch_ptr);
  T* precisions = reinterpret_cast<T*>(scratch);
  double* constants = reinterpret_cast<double*>(scratch + gmm_diag_precision_bytes(k, dims, sizeof(T) == sizeof(float)));

  cuda::check_before_launch("gmm setup_kernel");
  setup_kernel<T><<<static_cast<unsigned>(k), kThreads, 0, stream>>>(log_weights, variances, dims, precisions,
                                                                     constants);
  cuda::check_after_launch("gmm setup_kernel");

  cuda::check_before_launch("gmm loglik_kernel");
  loglik_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(queries, n, dims, means, precisions,
                                                                          constants, k, out);
  cuda::check_after_launch("gmm loglik_kernel");
}

}  // namespace

void gmm_diag_loglik_cuda(const float* queries, int64_t n, int64_t dims, const double* log_weights,
                          const float* means, const float* variances, int64_t k, double* out, void* scratch,
                          void* stream) {
  launch(queries, n, dims, log_weights, means, variances, k, out, scratch, stream);
}

void gmm_diag_loglik_cuda(const double* queries, int64_t n, int64_t dims, const double* log_weights,
                          const double* means, const double* variances, int64_t k, double* out, void* scratch,
                          void* stream) {
  launch(queries, n, dims, log_weights, means, variances, k, out, scratch, stream);
}

}  // namespace asdx::gmm
