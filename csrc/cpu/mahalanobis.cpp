// CPU batched Mahalanobis: out[n][k] = ||L_k^T (q_n - mu_k)||^2.
//
// This is a GEMM Y = X L (X: centred queries, L: lower triangular) fused with
// the row sums of Y^2, so Y is never stored. Structure (as in BLIS-style GEMM):
//   - queries are processed in blocks of `block_rows`, one block per work item;
//     a block is read from memory once and centred/packed once per component;
//   - the packed block (i-major, kMr queries interleaved) stays in L2;
//   - L is packed once per call into panels of kNr columns, each panel holding
//     only rows i >= its first column (the triangle: half of the dense flops);
//   - the micro-kernel keeps a kMr x kNr tile of Y in registers (2 vectors of
//     queries x 6 columns = 12 accumulators), broadcasting one L entry per
//     column, and squares the finished tile into the per-query sums.
// The hot routine is compiled twice (target_clones): AVX2/FMA (x86-64-v3) and
// the baseline x86-64; the loader picks one at run time, so the wheel needs no
// -march flag. This file is built with -ffp-contract=fast so the multiply-adds
// fuse (see CMakeLists.txt); distances are not bit-identical across machines.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "asdx/mahalanobis.h"
#include "multiversion.h"
#include "parallel.h"


namespace asdx::mahalanobis {
namespace {

constexpr int kNr = 6;                           // columns of L per panel (broadcast operand)
constexpr int64_t kBlockBytes = 192 * 1024;      // packed query block, sized to sit in L2

template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32), aligned(32)));
  static constexpr int kLanes = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32), aligned(32)));
  static constexpr int kLanes = 4;
};

template <class T>
constexpr int kMr = 2 * Vec<T>::kLanes;  // queries per micro-tile

// L_k in panels: panel p covers columns [p*kNr, p*kNr + kNr), rows i >= p*kNr,
// kNr values per row (zeros above the diagonal and past the last column).
template <class T>
struct PackedFactors {
  int64_t dims = 0;
  int64_t panels = 0;
  int64_t per_component = 0;
  std::vector<int64_t> offset;  // start of each panel within a component
  std::vector<T> data;

  PackedFactors(const T* factors, int64_t dims_, int64_t k) : dims(dims_), panels((dims_ + kNr - 1) / kNr) {
    offset.resize(panels);
    int64_t total = 0;
    for (int64_t p = 0; p < panels; ++p) {
      offset[p] = total;
      total += (dims - p * kNr) * kNr;
    }
    per_component = total;
    data.assign(per_component * k, T(0));
    for (int64_t c = 0; c < k; ++c) {
      const T* L = factors + c * dims * dims;
      T* dst = data.data() + c * per_component;
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t j0 = p * kNr;
        T* panel = dst + offset[p];
        for (int64_t i = j0; i < dims; ++i) {
          for (int r = 0; r < kNr; ++r) {
            const int64_t j = j0 + r;
            panel[(i - j0) * kNr + r] = (j < dims && j <= i) ? L[i * dims + j] : T(0);
          }
        }
      }
    }
  }
};

template <class T>
struct AlignedBuffer {
  T* ptr = nullptr;
  explicit AlignedBuffer(int64_t count) {
    const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
    ptr = static_cast<T*>(std::aligned_alloc(64, std::max<size_t>(bytes, 64)));
    if (ptr == nullptr) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(ptr); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

// Packs rows [0, rows) of the block, centred on mean, as groups of kMr queries:
// packed[g][i][r] = q[g*kMr + r][i] - mean[i]; missing rows are zero.
template <class T>
__attribute__((always_inline)) inline void pack_centred(const T* queries, int64_t rows, int64_t dims, const T* mean,
                                                        T* packed) {
  constexpr int mr = kMr<T>;
  const int64_t groups = (rows + mr - 1) / mr;
  for (int64_t g = 0; g < groups; ++g) {
    T* dst = packed + g * dims * mr;
    for (int r = 0; r < mr; ++r) {
      const int64_t row = g * mr + r;
      if (row < rows) {
        const T* q = queries + row * dims;
        for (int64_t i = 0; i < dims; ++i) dst[i * mr + r] = q[i] - mean[i];
      } else {
        for (int64_t i = 0; i < dims; ++i) dst[i * mr + r] = T(0);
      }
    }
  }
}

// One kMr x kNr tile of Y over `len` rows of the panel, then its squares into sums.
template <class T>
__attribute__((always_inline)) inline void micro_tile(const T* a, const T* b, int64_t len, double* sums) {
  using V = typename Vec<T>::type;
  constexpr int lanes = Vec<T>::kLanes;
  constexpr int mr = kMr<T>;
  V c0[kNr], c1[kNr];
  for (int r = 0; r < kNr; ++r) {
    c0[r] = V{} ;
    c1[r] = V{};
  }
  for (int64_t i = 0; i < len; ++i) {
    const V a0 = *reinterpret_cast<const V*>(a + i * mr);
    const V a1 = *reinterpret_cast<const V*>(a + i * mr + lanes);
    const T* bi = b + i * kNr;
#pragma GCC unroll 6
    for (int r = 0; r < kNr; ++r) {
      const T s = bi[r];
      c0[r] += a0 * s;
      c1[r] += a1 * s;
    }
  }
  alignas(64) T tile[kNr][mr];
  for (int r = 0; r < kNr; ++r) {
    *reinterpret_cast<V*>(&tile[r][0]) = c0[r];
    *reinterpret_cast<V*>(&tile[r][lanes]) = c1[r];
  }
  for (int r = 0; r < kNr; ++r) {
    for (int l = 0; l < mr; ++l) sums[l] = add_square(sums[l], tile[r][l]);
  }
}

// All components for one block of query rows; out rows [0, rows) of this block.
template <class T>
__attribute__((always_inline)) inline void block_impl(const T* queries, int64_t rows, int64_t dims, const T* means,
                                                      const PackedFactors<T>& factors, int64_t k, T* packed,
                                                      double* sums, T* out) {
  constexpr int mr = kMr<T>;
  const int64_t groups = (rows + mr - 1) / mr;
  for (int64_t c = 0; c < k; ++c) {
    pack_centred(queries, rows, dims, means + c * dims, packed);
    std::fill(sums, sums + groups * mr, 0.0);
    const T* factor = factors.data.data() + c * factors.per_component;
    for (int64_t p = 0; p < factors.panels; ++p) {
      const int64_t j0 = p * kNr;
      const T* panel = factor + factors.offset[p];
      for (int64_t g = 0; g < groups; ++g) {
        micro_tile(packed + g * dims * mr + j0 * mr, panel, dims - j0, sums + g * mr);
      }
    }
    for (int64_t row = 0; row < rows; ++row) out[row * k + c] = static_cast<T>(sums[row]);
  }
}

ASDX_MULTIVERSION void block_f32(const float* queries, int64_t rows, int64_t dims, const float* means,
                                 const PackedFactors<float>& factors, int64_t k, float* packed, double* sums,
                                 float* out) {
  block_impl(queries, rows, dims, means, factors, k, packed, sums, out);
}

ASDX_MULTIVERSION void block_f64(const double* queries, int64_t rows, int64_t dims, const double* means,
                                 const PackedFactors<double>& factors, int64_t k, double* packed, double* sums,
                                 double* out) {
  block_impl(queries, rows, dims, means, factors, k, packed, sums, out);
}

inline void run_block(const float* q, int64_t rows, int64_t dims, const float* means,
                      const PackedFactors<float>& f, int64_t k, float* packed, double* sums, float* out) {
  block_f32(q, rows, dims, means, f, k, packed, sums, out);
}
inline void run_block(const double* q, int64_t rows, int64_t dims, const double* means,
                      const PackedFactors<double>& f, int64_t k, double* packed, double* sums, double* out) {
  block_f64(q, rows, dims, means, f, k, packed, sums, out);
}

template <class T>
void mahalanobis_impl(const T* queries, int64_t n, int64_t dims, const T* means, const T* factors, int64_t k, T* out) {
  if (n <= 0 || k <= 0) return;
  constexpr int mr = kMr<T>;
  const PackedFactors<T> packed_factors(factors, dims, k);
  const int64_t block_rows =
      std::max<int64_t>(mr, kBlockBytes / (static_cast<int64_t>(sizeof(T)) * std::max<int64_t>(dims, 1)) / mr * mr);
  const int64_t blocks = (n + block_rows - 1) / block_rows;
  cpu::parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> packed(block_rows * dims);
    AlignedBuffer<double> sums(block_rows);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t row0 = b * block_rows;
      const int64_t rows = std::min(block_rows, n - row0);
      run_block(queries + row0 * dims, rows, dims, means, packed_factors, k, packed.ptr, sums.ptr, out + row0 * k);
    }
  });
}

}  // namespace

void mahalanobis_cpu(const float* queries, int64_t n, int64_t dims, const float* means, const float* factors,
                     int64_t k, float* out) {
  mahalanobis_impl(queries, n, dims, means, factors, k, out);
}

void mahalanobis_cpu(const double* queries, int64_t n, int64_t dims, const double* means, const double* factors,
                     int64_t k, double* out) {
  mahalanobis_impl(queries, n, dims, means, factors, k, out);
}

}  // namespace asdx::mahalanobis
