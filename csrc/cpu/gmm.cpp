// CPU diagonal-GMM log-likelihood, one pass over the queries.
//
// Work item: a block of query rows. For each tile of kQb queries x kKb
// components the quadratic terms are accumulated in kQb*kKb vector registers,
// vectorised along the feature dimension, so each query vector and each
// component row is loaded once per tile. The per-component log-densities of
// a query then go through a max-shifted log-sum-exp in float64. float32 input
// is computed in float32 (8 lanes) with the lane sums and everything after in
// float64. target_clones builds an AVX2/FMA and a baseline x86-64 version.
#include <algorithm>
#include <cmath>
#include <vector>

#include "asdx/gmm.h"
#include "multiversion.h"
#include "parallel.h"


namespace asdx::gmm {
namespace {

constexpr int kQb = 4;                 // queries per tile
constexpr int kKb = 2;                 // components per tile
constexpr int64_t kMinRowsPerThread = 64;

template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32), aligned(4)));
  static constexpr int kLanes = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32), aligned(8)));
  static constexpr int kLanes = 4;
};

// quad[q][c] = sum_d (x_qd - mu_cd)^2 p_cd for `nq` queries and `nc` components.
template <class T, int NQ, int NC>
__attribute__((always_inline)) inline void quadratic_tile(const T* const* x, const T* const* mean,
                                                          const T* const* precision, int64_t dims,
                                                          double quad[kQb][kKb]) {
  using V = typename Vec<T>::type;
  constexpr int lanes = Vec<T>::kLanes;
  V acc[NQ][NC];
  for (int q = 0; q < NQ; ++q)
    for (int c = 0; c < NC; ++c) acc[q][c] = V{};
  const int64_t body = dims / lanes * lanes;
  for (int64_t d = 0; d < body; d += lanes) {
    V m[NC], p[NC];
    for (int c = 0; c < NC; ++c) {
      m[c] = *reinterpret_cast<const V*>(mean[c] + d);
      p[c] = *reinterpret_cast<const V*>(precision[c] + d);
    }
    for (int q = 0; q < NQ; ++q) {
      const V xv = *reinterpret_cast<const V*>(x[q] + d);
      for (int c = 0; c < NC; ++c) acc[q][c] += weighted_square(xv, m[c], p[c]);
    }
  }
  for (int q = 0; q < NQ; ++q) {
    for (int c = 0; c < NC; ++c) {
      double s = 0.0;
      for (int l = 0; l < lanes; ++l) s += static_cast<double>(acc[q][c][l]);
      for (int64_t d = body; d < dims; ++d) s += static_cast<double>(weighted_square(x[q][d], mean[c][d], precision[c][d]));
      quad[q][c] = s;
    }
  }
}

template <class T, int NQ>
__attribute__((always_inline)) inline void rows_impl(const T* queries, int64_t dims, const T* means,
                                                     const T* precisions, const double* constants, int64_t k,
                                                     double* log_density /* NQ x k */) {
  const T* x[kQb];
  for (int q = 0; q < NQ; ++q) x[q] = queries + q * dims;
  double quad[kQb][kKb];
  int64_t c0 = 0;
  for (; c0 + kKb <= k; c0 += kKb) {
    const T* m[kKb] = {means + c0 * dims, means + (c0 + 1) * dims};
    const T* p[kKb] = {precisions + c0 * dims, precisions + (c0 + 1) * dims};
    quadratic_tile<T, NQ, kKb>(x, m, p, dims, quad);
    for (int q = 0; q < NQ; ++q)
      for (int c = 0; c < kKb; ++c) log_density[q * k + c0 + c] = component_log_density(constants[c0 + c], quad[q][c]);
  }
  if (c0 < k) {
    const T* m[1] = {means + c0 * dims};
    const T* p[1] = {precisions + c0 * dims};
    quadratic_tile<T, NQ, 1>(x, m, p, dims, quad);
    for (int q = 0; q < NQ; ++q) log_density[q * k + c0] = component_log_density(constants[c0], quad[q][0]);
  }
}

// Rows [0, rows) of a block: log-likelihood into out.
template <class T>
__attribute__((always_inline)) inline void block_impl(const T* queries, int64_t rows, int64_t dims, const T* means,
                                                      const T* precisions, const double* constants, int64_t k,
                                                      double* scratch, double* out) {
  int64_t r = 0;
  for (; r + kQb <= rows; r += kQb) {
    rows_impl<T, kQb>(queries + r * dims, dims, means, precisions, constants, k, scratch);
    for (int q = 0; q < kQb; ++q) out[r + q] = log_sum_exp(scratch + q * k, k);
  }
  for (; r < rows; ++r) {
    rows_impl<T, 1>(queries + r * dims, dims, means, precisions, constants, k, scratch);
    out[r] = log_sum_exp(scratch, k);
  }
}

ASDX_MULTIVERSION void block_f32(const float* q, int64_t rows, int64_t dims, const float* means, const float* prec,
                                 const double* constants, int64_t k, double* scratch, double* out) {
  block_impl(q, rows, dims, means, prec, constants, k, scratch, out);
}
ASDX_MULTIVERSION void block_f64(const double* q, int64_t rows, int64_t dims, const double* means,
                                 const double* prec, const double* constants, int64_t k, double* scratch,
                                 double* out) {
  block_impl(q, rows, dims, means, prec, constants, k, scratch, out);
}
inline void run_block(const float* q, int64_t rows, int64_t dims, const float* means, const float* prec,
                      const double* constants, int64_t k, double* scratch, double* out) {
  block_f32(q, rows, dims, means, prec, constants, k, scratch, out);
}
inline void run_block(const double* q, int64_t rows, int64_t dims, const double* means, const double* prec,
                      const double* constants, int64_t k, double* scratch, double* out) {
  block_f64(q, rows, dims, means, prec, constants, k, scratch, out);
}

template <class T>
void loglik_impl(const T* queries, int64_t n, int64_t dims, const double* log_weights, const T* means,
                 const T* variances, int64_t k, double* out) {
  if (n <= 0) return;
  // Per-component constants and precisions: the per-element math of the CUDA
  // setup kernel (asdx/gmm.h), summed here in order.
  std::vector<double> constants(k);
  std::vector<T> precisions(k * dims);
  for (int64_t c = 0; c < k; ++c) {
    double log_terms = 0.0;
    for (int64_t d = 0; d < dims; ++d) {
      const T v = variances[c * dims + d];
      log_terms += log_normaliser_term(static_cast<double>(v));
      precisions[c * dims + d] = precision_of(v);
    }
    constants[c] = component_constant(log_weights[c], log_terms);
  }
  cpu::parallel_for(n, kMinRowsPerThread, [&](int64_t begin, int64_t end) {
    std::vector<double> scratch(kQb * k);
    constexpr int64_t kBlock = 256;
    for (int64_t r = begin; r < end; r += kBlock) {
      const int64_t rows = std::min(kBlock, end - r);
      run_block(queries + r * dims, rows, dims, means, precisions.data(), constants.data(), k, scratch.data(),
                out + r);
    }
  });
}

}  // namespace

void gmm_diag_loglik_cpu(const float* queries, int64_t n, int64_t dims, const double* log_weights, const float* means,
                         const float* variances, int64_t k, double* out) {
  loglik_impl(queries, n, dims, log_weights, means, variances, k, out);
}

void gmm_diag_loglik_cpu(const double* queries, int64_t n, int64_t dims, const double* log_weights,
                         const double* means, const double* variances, int64_t k, double* out) {
  loglik_impl(queries, n, dims, log_weights, means, variances, k, out);
}

}  // namespace asdx::gmm
