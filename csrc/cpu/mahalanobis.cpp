// CPU batched Mahalanobis: out[n][k] = ||L_k^T (q_n - mu_k)||^2.
//
// This is a GEMM Y = X L (X: centred queries, L: lower triangular) fused with
// the row sums of Y^2, so Y is never stored. Structure (as in BLIS-style GEMM):
//   - queries are processed in blocks of `block_rows`, one block per work item;
//     a block is read from memory once and centred/packed once per component;
//   - the packed block (i-major, kMr queries interleaved) stays in L2;
//   - L is packed once per call into panels of kNr columns, each panel holding
//     only rows i >= its first column (the triangle: half of the dense flops);
//   - the micro-kernel keeps a kMr x kNr tile of Y in registers (kMv vectors of
//     queries x kNr columns of accumulators), broadcasting one L entry per
//     column, and squares the finished tile into the per-query sums.
// One instantiation per ISA path (cpu/isa.h), picked at each call from ASDX_ISA:
//   avx512 (x86-64-v4): 512-bit vectors, 2 x 12 accumulators of the 32 zmm registers;
//   avx2 (x86-64-v3):   256-bit vectors, 2 x 6 accumulators of the 16 ymm registers;
//   baseline x86-64:    128-bit vectors (SSE2), 2 x 6 accumulators of the 16 xmm registers.
// This file is built with -ffp-contract=fast so the multiply-adds fuse on the
// avx2/avx512 paths (see CMakeLists.txt); distances are not bit-identical across
// paths or machines (docs/kernels.md gives the tolerances).
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "asdx/mahalanobis.h"
#include "cpu/aligned_buffer.h"
#include "cpu/isa.h"
#include "parallel.h"


namespace asdx::mahalanobis {
namespace {

// A register tile: kMv vectors of `Bytes` bytes along the queries (kMr queries) times kNr columns of L.
template <class T, int Bytes, int Mv, int Nr>
struct Tile {
  typedef T V __attribute__((vector_size(Bytes)));
  static constexpr int kLanes = Bytes / static_cast<int>(sizeof(T));
  static constexpr int kMv = Mv;
  static constexpr int kMr = Mv * kLanes;  // queries per micro-tile
  static constexpr int kNr = Nr;           // columns of L per panel (broadcast operand)
};

template <class T>
using Avx512Tile = Tile<T, 64, 2, 12>;
template <class T>
using Avx2Tile = Tile<T, 32, 2, 6>;
template <class T>
using BaselineTile = Tile<T, 16, 2, 6>;

// The packed query block, sized to sit in L2 (512 KB and up on current x86 cores) beside the
// factor panel it meets. On the x86-64-v4 host of benchmarks/RESULTS.md (2 MB L2) blocks of 192 KB
// to 768 KB ran at the same speed (single thread, float32 and float64, D = 640); 96 KB was slower
// in float64 (one 16-query group per block, so every factor panel served one tile).
constexpr int64_t kBlockBytes = 192 * 1024;

// L_k in panels: panel p covers columns [p*Nr, p*Nr + Nr), rows i >= p*Nr,
// Nr values per row (zeros above the diagonal and past the last column).
template <class T, int Nr>
struct PackedFactors {
  int64_t dims = 0;
  int64_t panels = 0;
  int64_t per_component = 0;
  std::vector<int64_t> offset;  // start of each panel within a component
  std::vector<T> data;

  PackedFactors(const T* factors, int64_t dims_, int64_t k) : dims(dims_), panels((dims_ + Nr - 1) / Nr) {
    offset.resize(panels);
    int64_t total = 0;
    for (int64_t p = 0; p < panels; ++p) {
      offset[p] = total;
      total += (dims - p * Nr) * Nr;
    }
    per_component = total;
    data.assign(per_component * k, T(0));
    for (int64_t c = 0; c < k; ++c) {
      const T* L = factors + c * dims * dims;
      T* dst = data.data() + c * per_component;
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t j0 = p * Nr;
        T* panel = dst + offset[p];
        for (int64_t i = j0; i < dims; ++i) {
          for (int r = 0; r < Nr; ++r) {
            const int64_t j = j0 + r;
            panel[(i - j0) * Nr + r] = (j < dims && j <= i) ? L[i * dims + j] : T(0);
          }
        }
      }
    }
  }
};

using cpu::AlignedBuffer;

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define ASDX_SHUFFLEVECTOR 1  // GCC >= 12, Clang: the packing transposes in registers
#endif
#endif

#ifdef ASDX_SHUFFLEVECTOR
// One stage of the in-register transpose of lanes x lanes values held as row vectors: stage h
// swaps the off-diagonal h x h blocks of each 2h x 2h block. Row r (bit h clear) pairs with row
// r + h: the new row r keeps a's lanes with bit h clear and takes b[l - h] for the others, the new
// row r + h takes a[l + h] for lanes with bit h clear, else b[l] (lanes of b are numbered n + l).
template <class K, int h, int... l>
__attribute__((always_inline)) inline void transpose_stage(typename K::V* rows, std::integer_sequence<int, l...>) {
  constexpr int n = K::kLanes;
#pragma GCC unroll 16
  for (int r = 0; r < n; ++r) {
    if (r & h) continue;
    const typename K::V a = rows[r], b = rows[r + h];
    rows[r] = __builtin_shufflevector(a, b, ((l & h) ? n + l - h : l)...);
    rows[r + h] = __builtin_shufflevector(a, b, ((l & h) ? n + l : l + h)...);
  }
  if constexpr (h > 1) transpose_stage<K, h / 2>(rows, std::integer_sequence<int, l...>{});
}

// Transposes lanes x lanes values held as `lanes` row vectors, in place.
template <class K>
__attribute__((always_inline)) inline void transpose(typename K::V* rows) {
  transpose_stage<K, K::kLanes / 2>(rows, std::make_integer_sequence<int, K::kLanes>{});
}
#endif

// Packs rows [0, rows) of the block, centred on mean, as groups of mr queries:
// packed[g][i][r] = q[g*mr + r][i] - mean[i]; missing rows are zero. Full lanes x lanes squares
// (lanes queries x lanes dimensions) go through registers: centred rows in, transposed, whole
// vectors out. Element by element, the scattered stores and lane extractions took 17-30 % of the
// avx512 path's time (perf, float32, D = 640). The remainder (dims % lanes, and a last group with
// missing rows) is packed element by element.
template <class T, class K>
__attribute__((always_inline)) inline void pack_centred(const T* queries, int64_t rows, int64_t dims, const T* mean,
                                                        T* packed) {
  using V = typename K::V;
  constexpr int lanes = K::kLanes, mv = K::kMv, mr = K::kMr;
  const int64_t groups = (rows + mr - 1) / mr;
  const int64_t body = dims / lanes * lanes;
  for (int64_t g = 0; g < groups; ++g) {
    T* dst = packed + g * dims * mr;
    const int64_t present = std::min<int64_t>(mr, rows - g * mr);  // query rows in this group
    int64_t i_scalar = 0;                                         // dims from here on are packed scalar
#ifdef ASDX_SHUFFLEVECTOR
    if (present == mr) {
      for (int64_t i0 = 0; i0 < body; i0 += lanes) {
        V m;
        std::memcpy(&m, mean + i0, sizeof(V));
#pragma GCC unroll 16
        for (int v = 0; v < mv; ++v) {
          V square[lanes];
#pragma GCC unroll 16
          for (int r = 0; r < lanes; ++r) {
            std::memcpy(&square[r], queries + (g * mr + v * lanes + r) * dims + i0, sizeof(V));
            square[r] -= m;
          }
          transpose<K>(square);
#pragma GCC unroll 16
          for (int t = 0; t < lanes; ++t) *reinterpret_cast<V*>(dst + (i0 + t) * mr + v * lanes) = square[t];
        }
      }
      i_scalar = body;
    }
#endif
    for (int r = 0; r < mr; ++r) {
      const int64_t row = g * mr + r;
      if (row < rows) {
        const T* q = queries + row * dims;
        for (int64_t i = i_scalar; i < dims; ++i) dst[i * mr + r] = q[i] - mean[i];
      } else {
        for (int64_t i = i_scalar; i < dims; ++i) dst[i * mr + r] = T(0);
      }
    }
  }
}

// One kMr x kNr tile of Y over `len` rows of the panel, then its squares into sums.
template <class T, class K>
__attribute__((always_inline)) inline void micro_tile(const T* a, const T* b, int64_t len, double* sums) {
  using V = typename K::V;
  constexpr int lanes = K::kLanes, mv = K::kMv, mr = K::kMr, nr = K::kNr;
  V c[mv][nr];
#pragma GCC unroll 16
  for (int v = 0; v < mv; ++v)
#pragma GCC unroll 16
    for (int r = 0; r < nr; ++r) c[v][r] = V{};
  for (int64_t i = 0; i < len; ++i) {
    V av[mv];
#pragma GCC unroll 16
    for (int v = 0; v < mv; ++v) av[v] = *reinterpret_cast<const V*>(a + i * mr + v * lanes);
    const T* bi = b + i * nr;
#pragma GCC unroll 16
    for (int r = 0; r < nr; ++r) {
      const T s = bi[r];
#pragma GCC unroll 16
      for (int v = 0; v < mv; ++v) c[v][r] += av[v] * s;
    }
  }
  alignas(64) T tile[nr][mr];
#pragma GCC unroll 16
  for (int r = 0; r < nr; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < mv; ++v) *reinterpret_cast<V*>(&tile[r][v * lanes]) = c[v][r];
  for (int r = 0; r < nr; ++r) {
    for (int l = 0; l < mr; ++l) sums[l] = add_square(sums[l], tile[r][l]);
  }
}

// All components for one block of query rows; out rows [0, rows) of this block.
template <class T, class K>
__attribute__((always_inline)) inline void block_impl(const T* queries, int64_t rows, int64_t dims, const T* means,
                                                      const PackedFactors<T, K::kNr>& factors, int64_t k, T* packed,
                                                      double* sums, T* out) {
  constexpr int mr = K::kMr, nr = K::kNr;
  const int64_t groups = (rows + mr - 1) / mr;
  for (int64_t c = 0; c < k; ++c) {
    pack_centred<T, K>(queries, rows, dims, means + c * dims, packed);
    std::fill(sums, sums + groups * mr, 0.0);
    const T* factor = factors.data.data() + c * factors.per_component;
    for (int64_t p = 0; p < factors.panels; ++p) {
      const int64_t j0 = p * nr;
      const T* panel = factor + factors.offset[p];
      for (int64_t g = 0; g < groups; ++g) {
        micro_tile<T, K>(packed + g * dims * mr + j0 * mr, panel, dims - j0, sums + g * mr);
      }
    }
    for (int64_t row = 0; row < rows; ++row) out[row * k + c] = static_cast<T>(sums[row]);
  }
}

// The per-path entry points: the whole block is compiled for the path's ISA (the inlined helpers with it).
template <class T, class K>
using BlockFn = void (*)(const T*, int64_t, int64_t, const T*, const PackedFactors<T, K::kNr>&, int64_t, T*, double*,
                         T*);

template <class T>
ASDX_TARGET_V4 void block_avx512(const T* queries, int64_t rows, int64_t dims, const T* means,
                                 const PackedFactors<T, Avx512Tile<T>::kNr>& factors, int64_t k, T* packed,
                                 double* sums, T* out) {
  block_impl<T, Avx512Tile<T>>(queries, rows, dims, means, factors, k, packed, sums, out);
}

template <class T>
ASDX_TARGET_V3 void block_avx2(const T* queries, int64_t rows, int64_t dims, const T* means,
                               const PackedFactors<T, Avx2Tile<T>::kNr>& factors, int64_t k, T* packed, double* sums,
                               T* out) {
  block_impl<T, Avx2Tile<T>>(queries, rows, dims, means, factors, k, packed, sums, out);
}

template <class T>
void block_baseline(const T* queries, int64_t rows, int64_t dims, const T* means,
                    const PackedFactors<T, BaselineTile<T>::kNr>& factors, int64_t k, T* packed, double* sums,
                    T* out) {
  block_impl<T, BaselineTile<T>>(queries, rows, dims, means, factors, k, packed, sums, out);
}

// Packs the factors for tile K and runs `block` over the query blocks in parallel.
template <class T, class K>
void run_path(BlockFn<T, K> block, const T* queries, int64_t n, int64_t dims, const T* means, const T* factors,
              int64_t k, T* out) {
  constexpr int mr = K::kMr;
  const PackedFactors<T, K::kNr> packed_factors(factors, dims, k);
  const int64_t block_rows =
      std::max<int64_t>(mr, kBlockBytes / (static_cast<int64_t>(sizeof(T)) * std::max<int64_t>(dims, 1)) / mr * mr);
  const int64_t blocks = (n + block_rows - 1) / block_rows;
  cpu::parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
    AlignedBuffer<T> packed(block_rows * dims);
    AlignedBuffer<double> sums(block_rows);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t row0 = b * block_rows;
      const int64_t rows = std::min(block_rows, n - row0);
      block(queries + row0 * dims, rows, dims, means, packed_factors, k, packed.ptr, sums.ptr, out + row0 * k);
    }
  });
}

template <class T>
void mahalanobis_impl(const T* queries, int64_t n, int64_t dims, const T* means, const T* factors, int64_t k, T* out) {
  const cpu::Isa isa = cpu::active_isa();  // first: a bad ASDX_ISA is an error even for empty input
  if (n <= 0 || k <= 0) return;
  switch (isa) {
    case cpu::Isa::avx512:
      return run_path<T, Avx512Tile<T>>(block_avx512<T>, queries, n, dims, means, factors, k, out);
    case cpu::Isa::avx2:
      return run_path<T, Avx2Tile<T>>(block_avx2<T>, queries, n, dims, means, factors, k, out);
    case cpu::Isa::baseline:
      break;
  }
  run_path<T, BaselineTile<T>>(block_baseline<T>, queries, n, dims, means, factors, k, out);
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
