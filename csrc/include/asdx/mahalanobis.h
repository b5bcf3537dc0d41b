// Batched squared Mahalanobis distances d_k(q) = (q - mu_k)^T P_k (q - mu_k).
//
// Each precision is factored once (in float64, by the Python wrapper) as
// P_k = L_k L_k^T with L_k lower triangular, so d_k(q) = ||L_k^T (q - mu_k)||^2:
// a triangular product with half the flops of the dense quadratic form.
// y_j = sum_{i >= j} L[i][j] x_i, with x = q - mu.
#pragma once

#include <cstdint>

#include "asdx/common.h"

namespace asdx::mahalanobis {

// Adds one output coordinate's contribution y^2 to a query's distance. The sum
// of squares is carried in double even for float32 queries: its terms are all
// positive, so this only removes rounding growth over D terms.
template <class T>
ASDX_HD double add_square(double distance, T y) {
  const double v = static_cast<double>(y);
  return distance + v * v;
}

// queries (n, dims); means (k, dims); factors (k, dims, dims) lower triangular
// with P = L L^T; out (n, k) squared distances.
void mahalanobis_cpu(const float* queries, int64_t n, int64_t dims, const float* means, const float* factors,
                     int64_t k, float* out);
void mahalanobis_cpu(const double* queries, int64_t n, int64_t dims, const double* means, const double* factors,
                     int64_t k, double* out);

#ifdef ASDX_WITH_CUDA
// Device pointers; stream is a cudaStream_t.
void mahalanobis_cuda(const float* queries, int64_t n, int64_t dims, const float* means, const float* factors,
                      int64_t k, float* out, void* stream);
void mahalanobis_cuda(const double* queries, int64_t n, int64_t dims, const double* means, const double* factors,
                      int64_t k, double* out, void* stream);
#endif

}  // namespace asdx::mahalanobis
