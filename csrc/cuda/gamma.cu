// CUDA twin of csrc/cpu/gamma.cpp: one thread block per score set. The threads
// share the sums over the set's scores (block reductions whose result every
// thread receives), and each thread then runs the same scalar iteration of
// asdx/gamma.h on those identical sums, so all threads take the same branches.
#include <cuda_runtime.h>

#include "asdx/gamma.h"
#include "asdx/gamma_kernels.h"
#include "cuda_utils.h"

namespace asdx::gamma {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

template <int N>
struct Values {
  double v[N];
};

// Block-wide reduction of N doubles with `op` per slot; every thread gets the result.
template <int N, class Op>
__device__ Values<N> block_reduce(Values<N> x, Op op) {
  __shared__ double partial[N][kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) {
    for (int j = 0; j < N; ++j) x.v[j] = op(j, x.v[j], __shfl_down_sync(kFullMask, x.v[j], offset));
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's readers are done with `partial`
  if (lane == 0) {
    for (int j = 0; j < N; ++j) partial[j][warp] = x.v[j];
  }
  __syncthreads();
  if (warp == 0) {
    for (int j = 0; j < N; ++j) x.v[j] = lane < kWarps ? partial[j][lane] : op.identity(j);
    for (int offset = 16; offset > 0; offset >>= 1) {
      for (int j = 0; j < N; ++j) x.v[j] = op(j, x.v[j], __shfl_down_sync(kFullMask, x.v[j], offset));
    }
    if (lane == 0) {
      for (int j = 0; j < N; ++j) partial[j][0] = x.v[j];
    }
  }
  __syncthreads();
  Values<N> total;
  for (int j = 0; j < N; ++j) total.v[j] = partial[j][0];
  return total;
}

struct SumOp {
  __device__ double operator()(int, double a, double b) const { return a + b; }
  __device__ double identity(int) const { return 0.0; }
};

// Slots: sum, min, max, non-finite count.
struct StatsOp {
  __device__ double operator()(int j, double a, double b) const {
    if (j == 1) return fmin(a, b);
    if (j == 2) return fmax(a, b);
    return a + b;
  }
  __device__ double identity(int j) const { return j == 1 ? kInf : (j == 2 ? -kInf : 0.0); }
};

class BlockReducer {
 public:
  __device__ BlockReducer(const double* x, int64_t n) : x_(x), n_(n) {}

  __device__ SetStats stats() const {
    Values<4> local{{0.0, kInf, -kInf, 0.0}};
    for (int64_t i = threadIdx.x; i < n_; i += blockDim.x) {
      const double v = x_[i];
      if (!is_finite(v)) {
        local.v[3] += 1.0;
        continue;
      }
      local.v[0] += v;
      local.v[1] = fmin(local.v[1], v);
      local.v[2] = fmax(local.v[2], v);
    }
    const Values<4> t = block_reduce(local, StatsOp{});
    return {n_, static_cast<int64_t>(t.v[3]), t.v[1], t.v[2], t.v[0]};
  }

  __device__ Moments moments(double xbar) const {
    Values<2> local{{0.0, 0.0}};
    for (int64_t i = threadIdx.x; i < n_; i += blockDim.x) {
      const double d = x_[i] - xbar;
      local.v[0] += d * d;
      local.v[1] += d * d * d;
    }
    const Values<2> t = block_reduce(local, SumOp{});
    return {t.v[0], t.v[1]};
  }

  __device__ LocSums loc_sums(double xbar, double base, double gap, double inv_ybar) const {
    Values<3> local{{0.0, 0.0, 0.0}};
    for (int64_t i = threadIdx.x; i < n_; i += blockDim.x) {
      double c, k, e;
      loc_terms(x_[i], xbar, base, gap, inv_ybar, c, k, e);
      local.v[0] += c;
      local.v[1] += k;
      local.v[2] += e;
    }
    const Values<3> t = block_reduce(local, SumOp{});
    return {t.v[0], t.v[1], t.v[2]};
  }

  __device__ double loglik(const LoglikForm& form) const {
    Values<1> local{{0.0}};
    for (int64_t i = threadIdx.x; i < n_; i += blockDim.x) local.v[0] += loglik_term(form, x_[i]);
    return block_reduce(local, SumOp{}).v[0];
  }

 private:
  const double* x_;
  int64_t n_;
};

// Register-heavy (every thread runs the whole scalar MLE iteration): the bound
// lets the compiler budget registers for kThreads threads per block.
__global__ void __launch_bounds__(kThreads)
    fit_kernel(const double* values, const int64_t* offsets, bool fixed_loc, double loc, FitOutputs out) {
  const int64_t s = blockIdx.x;
  const int64_t begin = offsets[s];
  BlockReducer reducer(values + begin, offsets[s + 1] - begin);
  const Fit fit = fixed_loc ? fit_fixed_loc(reducer, loc) : fit_free_loc(reducer);
  if (threadIdx.x == 0) {
    out.shape[s] = fit.shape;
    out.loc[s] = fit.loc;
    out.scale[s] = fit.scale;
    out.loglik[s] = fit.loglik;
    out.status[s] = fit.status;
    out.method[s] = fit.status == kOk ? kMethodMle : kMethodNone;
  }
}

__global__ void ppf_kernel(const double* q, const double* shape, const double* loc, const double* scale, int64_t n,
                           double* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = ppf(q[i], shape[i], loc[i], scale[i]);
}

}  // namespace

void fit_cuda(const double* values, const int64_t* offsets, int64_t n_sets, bool fixed_loc, double loc,
              const FitOutputs& out, void* stream) {
  if (n_sets <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  // Sets beyond the grid limit (2^31 - 1 blocks) are launched in chunks.
  constexpr int64_t kMaxBlocks = 2147483647;
  for (int64_t first = 0; first < n_sets; first += kMaxBlocks) {
    const int64_t count = n_sets - first < kMaxBlocks ? n_sets - first : kMaxBlocks;
    const FitOutputs chunk{out.shape + first, out.loc + first,    out.scale + first,
                           out.loglik + first, out.status + first, out.method + first};
    cuda::check_before_launch("gamma fit_kernel");
    fit_kernel<<<static_cast<unsigned>(count), kThreads, 0, s>>>(values, offsets + first, fixed_loc, loc, chunk);
    cuda::check_after_launch("gamma fit_kernel");
  }
}

void ppf_cuda(const double* q, const double* shape, const double* loc, const double* scale, int64_t n, double* out,
              void* stream) {
  if (n <= 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  cuda::check_before_launch("gamma ppf_kernel");
  ppf_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(q, shape, loc, scale,
                                                                                                  n, out);
  cuda::check_after_launch("gamma ppf_kernel");
}

}  // namespace asdx::gamma
