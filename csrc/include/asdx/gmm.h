// Diagonal-covariance Gaussian mixture log-likelihood:
//   log p(x) = logsumexp_k [ c_k - 1/2 sum_d (x_d - mu_kd)^2 / var_kd ],
//   c_k = log w_k - 1/2 sum_d log(2 pi var_kd).
// The quadratic term uses the direct form (x - mu)^2 * precision, not the
// expanded x^2 p - 2 x mu p + mu^2 p that sklearn uses: with tiny variances
// (1e-10) or large offsets the expanded form cancels catastrophically.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "asdx/common.h"

namespace asdx::gmm {

// ---- Per-component setup, the same code on both devices (csrc/cpu/gmm.cpp
// loops over it serially, the CUDA setup kernel in parallel), in float64.

// One dimension's term log(2 pi var) of the log-determinant part of c_k.
ASDX_HD double log_normaliser_term(double variance) { return log(2.0 * kPi * variance); }

// 1 / var, formed in float64 and rounded once to the kernel's precision T.
template <class T>
ASDX_HD T precision_of(T variance) {
  return static_cast<T>(1.0 / static_cast<double>(variance));
}

// c_k = log w_k - 1/2 sum_d log(2 pi var_kd), given that sum of log_normaliser_term.
ASDX_HD double component_constant(double log_weight, double sum_of_log_terms) {
  return log_weight - 0.5 * sum_of_log_terms;
}

// ---- Per-query evaluation.

// One dimension's share of the quadratic term (before the factor -1/2).
template <class T>
ASDX_HD T weighted_square(T x, T mean, T precision) {
  const T t = x - mean;
  return t * t * precision;
}

// Component log-density from its constant c_k and its quadratic term.
ASDX_HD double component_log_density(double constant, double quadratic) { return constant - 0.5 * quadratic; }

// Numerically stable log(sum_k exp(v_k)): shifts by the maximum. All -inf -> -inf.
ASDX_HD double log_sum_exp(const double* values, int64_t k) {
  double top = -INFINITY;
  for (int64_t c = 0; c < k; ++c) top = values[c] > top ? values[c] : top;
  if (!(top > -INFINITY)) return top;
  double sum = 0.0;
  for (int64_t c = 0; c < k; ++c) sum += exp(values[c] - top);
  return top + log(sum);
}

// Running log-sum-exp for one value at a time (used where values are not stored).
struct OnlineLogSumExp {
  double top = -INFINITY;
  double sum = 0.0;
  ASDX_HD void add(double v) {
    if (!(v > -INFINITY)) return;
    if (v > top) {
      sum = sum * exp(top - v) + 1.0;
      top = v;
    } else {
      sum += exp(v - top);
    }
  }
  ASDX_HD double value() const { return top > -INFINITY ? top + log(sum) : top; }
};

// queries (n, dims); log_weights (k) float64; means, variances (k, dims);
// out (n) float64 per-sample log-likelihood.
void gmm_diag_loglik_cpu(const float* queries, int64_t n, int64_t dims, const double* log_weights, const float* means,
                         const float* variances, int64_t k, double* out);
void gmm_diag_loglik_cpu(const double* queries, int64_t n, int64_t dims, const double* log_weights,
                         const double* means, const double* variances, int64_t k, double* out);

// Device scratch of the CUDA kernel, allocated by the caller: the precisions
// (k x dims in the queries' precision), padded to 16 bytes, then the k float64
// constants c_k.
inline size_t gmm_diag_precision_bytes(int64_t k, int64_t dims, bool float32) {
  const size_t bytes = static_cast<size_t>(k) * static_cast<size_t>(dims) * (float32 ? sizeof(float) : sizeof(double));
  return (bytes + 15) / 16 * 16;
}
inline size_t gmm_diag_scratch_bytes(int64_t k, int64_t dims, bool float32) {
  return gmm_diag_precision_bytes(k, dims, float32) + static_cast<size_t>(k) * sizeof(double);
}

#ifdef ASDX_WITH_CUDA
// Device pointers (log_weights and out are float64 on the device); scratch has
// gmm_diag_scratch_bytes(k, dims, float32) bytes, 16-byte aligned, and must not
// be reused before the kernels finish (stream order); stream is a cudaStream_t.
void gmm_diag_loglik_cuda(const float* queries, int64_t n, int64_t dims, const double* log_weights,
                          const float* means, const float* variances, int64_t k, double* out, void* scratch,
                          void* stream);
void gmm_diag_loglik_cuda(const double* queries, int64_t n, int64_t dims, const double* log_weights,
                          const double* means, const double* variances, int64_t k, double* out, void* scratch,
                          void* stream);
#endif

}  // namespace asdx::gmm
