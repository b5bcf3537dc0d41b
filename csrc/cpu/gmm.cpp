// CPU diagonal-GMM log-likelihood, one pass over the queries.
//
// Work item: a block of query rows. For each tile of kQb queries x kKb
// components the quadratic terms are accumulated in kQb*kKb vector registers,
// vectorised along the feature dimension, so each query vector and each
// component row is loaded once per tile. The per-component log-densities of
// a query then go through a max-shifted log-sum-exp in float64. float32 input
// is computed in float32 with the lane sums and everything after in float64.
// One instantiation per ISA path (cpu/isa.h), picked at each call from ASDX_ISA:
// 512-bit vectors on avx512 (x86-64-v4), 256-bit on avx2 (x86-64-v3), 128-bit
// (SSE2) on the baseline. Built with -ffp-contract=fast (CMakeLists.txt): the
// avx2/avx512 paths fuse multiply-adds, so results differ across paths within
// the tolerances of docs/kernels.md.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "asdx/gmm.h"
#include "cpu/aligned_buffer.h"
#include "cpu/isa.h"
#include "parallel.h"


namespace asdx::gmm {
namespace {

constexpr int64_t kMinRowsPerThread = 64;
using cpu::AlignedBuffer;
constexpr int64_t kBlock = 256;  // query rows per call of a path's block function

// A register tile: Qb queries x Kb components of accumulators, vectors of `Bytes` bytes along D.
template <class T, int Bytes, int Qb, int Kb>
struct Tile {
  typedef T V __attribute__((vector_size(Bytes)));
  static constexpr int kLanes = Bytes / static_cast<int>(sizeof(T));
  static constexpr int kQb = Qb;  // queries per tile
  static constexpr int kKb = Kb;  // components per tile
};

template <class T>
using Avx512Tile = Tile<T, 64, 8, 2>;
template <class T>
using Avx2Tile = Tile<T, 32, 4, 2>;
template <class T>
using BaselineTile = Tile<T, 16, 4, 2>;

// The lanes of an accumulator summed in float64, pairwise (halves added, log2(lanes) steps: GCC
// vectorises them, where a serial sum is a chain of lanes dependent adds).
template <class K>
__attribute__((always_inline)) inline double lane_sum(typename K::V v) {
  constexpr int lanes = K::kLanes;
  double wide[lanes];
#pragma GCC unroll 16
  for (int l = 0; l < lanes; ++l) wide[l] = static_cast<double>(v[l]);
#pragma GCC unroll 16
  for (int half = lanes / 2; half >= 1; half /= 2)
#pragma GCC unroll 16
    for (int l = 0; l < half; ++l) wide[l] += wide[l + half];
  return wide[0];
}

// The components in the kernels' layout: means and precisions as k rows of `ld` values, 64-byte
// aligned, zero past dims (a zero mean and precision add nothing), and the constants c_k.
template <class T>
struct Components {
  int64_t dims, ld, k;
  AlignedBuffer<T> means, precisions;
  std::vector<double> constants;

  Components(const double* log_weights, const T* means_in, const T* variances, int64_t dims_, int64_t k_)
      : dims(dims_), ld(cpu::padded_to_line<T>(dims_)), k(k_), means(k_ * ld), precisions(k_ * ld), constants(k_) {
    // The per-element math of the CUDA setup kernel (asdx/gmm.h), summed here in order.
    for (int64_t c = 0; c < k; ++c) {
      double log_terms = 0.0;
      for (int64_t d = 0; d < ld; ++d) {
        const bool inside = d < dims;
        const T v = inside ? variances[c * dims + d] : T(1);
        if (inside) log_terms += log_normaliser_term(static_cast<double>(v));
        means.ptr[c * ld + d] = inside ? means_in[c * dims + d] : T(0);
        precisions.ptr[c * ld + d] = inside ? precision_of(v) : T(0);
      }
      constants[c] = component_constant(log_weights[c], log_terms);
    }
  }
};

// quad[q][c] = sum_d (x_qd - mu_cd)^2 p_cd for NQ queries and NC components; rows of `ld` values
// (a multiple of the lanes), 64-byte aligned.
template <class T, class K, int NQ, int NC>
__attribute__((always_inline)) inline void quadratic_tile(const T* const* x, const T* const* mean,
                                                          const T* const* precision, int64_t ld,
                                                          double quad[K::kQb][K::kKb]) {
  using V = typename K::V;
  constexpr int lanes = K::kLanes;
  V acc[NQ][NC];
#pragma GCC unroll 16
  for (int q = 0; q < NQ; ++q)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) acc[q][c] = V{};
  for (int64_t d = 0; d < ld; d += lanes) {
    V m[NC], p[NC];
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      m[c] = *reinterpret_cast<const V*>(mean[c] + d);
      p[c] = *reinterpret_cast<const V*>(precision[c] + d);
    }
#pragma GCC unroll 16
    for (int q = 0; q < NQ; ++q) {
      const V xv = *reinterpret_cast<const V*>(x[q] + d);
#pragma GCC unroll 16
      for (int c = 0; c < NC; ++c) acc[q][c] += weighted_square(xv, m[c], p[c]);
    }
  }
  for (int q = 0; q < NQ; ++q)
    for (int c = 0; c < NC; ++c) quad[q][c] = lane_sum<K>(acc[q][c]);
}

// Log-densities (NQ x k) of NQ query rows held in x (rows of ld values, aligned, zero padded).
template <class T, class K, int NQ>
__attribute__((always_inline)) inline void rows_impl(const T* x_rows, const Components<T>& model,
                                                     double* log_density /* NQ x k */) {
  constexpr int kb = K::kKb;
  const int64_t ld = model.ld, k = model.k;
  const T* x[NQ];
  for (int q = 0; q < NQ; ++q) x[q] = x_rows + q * ld;
  double quad[K::kQb][K::kKb];
  int64_t c0 = 0;
  for (; c0 + kb <= k; c0 += kb) {
    const T* m[kb];
    const T* p[kb];
    for (int c = 0; c < kb; ++c) {
      m[c] = model.means.ptr + (c0 + c) * ld;
      p[c] = model.precisions.ptr + (c0 + c) * ld;
    }
    quadratic_tile<T, K, NQ, kb>(x, m, p, ld, quad);
    for (int q = 0; q < NQ; ++q)
      for (int c = 0; c < kb; ++c)
        log_density[q * k + c0 + c] = component_log_density(model.constants[c0 + c], quad[q][c]);
  }
  for (; c0 < k; ++c0) {
    const T* m[1] = {model.means.ptr + c0 * ld};
    const T* p[1] = {model.precisions.ptr + c0 * ld};
    quadratic_tile<T, K, NQ, 1>(x, m, p, ld, quad);
    for (int q = 0; q < NQ; ++q) log_density[q * k + c0] = component_log_density(model.constants[c0], quad[q][0]);
  }
}

// Copies `count` query rows into x (rows of ld values, zero past dims).
template <class T>
__attribute__((always_inline)) inline void copy_rows(const T* queries, int count, int64_t dims, int64_t ld, T* x) {
  for (int q = 0; q < count; ++q) {
    std::memcpy(x + q * ld, queries + q * dims, static_cast<size_t>(dims) * sizeof(T));
    std::fill(x + q * ld + dims, x + (q + 1) * ld, T(0));
  }
}

// Rows [0, rows) of a block: log-likelihood into out. x: kQb * ld values of scratch, 64-byte
// aligned; scratch: kQb * k values.
template <class T, class K>
__attribute__((always_inline)) inline void block_impl(const T* queries, int64_t rows, const Components<T>& model,
                                                      T* x, double* scratch, double* out) {
  constexpr int qb = K::kQb;
  const int64_t dims = model.dims, k = model.k;
  int64_t r = 0;
  for (; r + qb <= rows; r += qb) {
    copy_rows(queries + r * dims, qb, dims, model.ld, x);
    rows_impl<T, K, qb>(x, model, scratch);
    for (int q = 0; q < qb; ++q) out[r + q] = log_sum_exp(scratch + q * k, k);
  }
  for (; r < rows; ++r) {
    copy_rows(queries + r * dims, 1, dims, model.ld, x);
    rows_impl<T, K, 1>(x, model, scratch);
    out[r] = log_sum_exp(scratch, k);
  }
}

// The per-path entry points: the whole block is compiled for the path's ISA (the inlined helpers with it).
template <class T>
using BlockFn = void (*)(const T*, int64_t, const Components<T>&, T*, double*, double*);

template <class T>
ASDX_TARGET_V4 void block_avx512(const T* q, int64_t rows, const Components<T>& model, T* x, double* scratch,
                                 double* out) {
  block_impl<T, Avx512Tile<T>>(q, rows, model, x, scratch, out);
}
template <class T>
ASDX_TARGET_V3 void block_avx2(const T* q, int64_t rows, const Components<T>& model, T* x, double* scratch,
                               double* out) {
  block_impl<T, Avx2Tile<T>>(q, rows, model, x, scratch, out);
}
template <class T>
void block_baseline(const T* q, int64_t rows, const Components<T>& model, T* x, double* scratch, double* out) {
  block_impl<T, BaselineTile<T>>(q, rows, model, x, scratch, out);
}

template <class T>
BlockFn<T> block_for(cpu::Isa isa) {
  switch (isa) {
    case cpu::Isa::avx512:
      return block_avx512<T>;
    case cpu::Isa::avx2:
      return block_avx2<T>;
    case cpu::Isa::baseline:
      break;
  }
  return block_baseline<T>;
}

template <class T>
void loglik_impl(const T* queries, int64_t n, int64_t dims, const double* log_weights, const T* means,
                 const T* variances, int64_t k, double* out) {
  const BlockFn<T> block = block_for<T>(cpu::active_isa());  // first: a bad ASDX_ISA errors even for n = 0
  if (n <= 0) return;
  const Components<T> model(log_weights, means, variances, dims, k);
  constexpr int max_qb = std::max({Avx512Tile<T>::kQb, Avx2Tile<T>::kQb, BaselineTile<T>::kQb});
  cpu::parallel_for(n, kMinRowsPerThread, [&](int64_t begin, int64_t end) {
    std::vector<double> scratch(max_qb * k);
    AlignedBuffer<T> x(max_qb * model.ld);
    for (int64_t r = begin; r < end; r += kBlock) {
      const int64_t rows = std::min(kBlock, end - r);
      block(queries + r * dims, rows, model, x.ptr, scratch.data(), out + r);
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
