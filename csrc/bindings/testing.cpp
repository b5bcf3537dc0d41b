// asdx._C.testing: test-only entry points, not part of asdx's API. They run
// device code on the host so that CPU-only tests check it (tests/test_cuda_fft_host.py):
// the CUDA frontends' FFT (asdx/fft.h) with the twiddle and bit-reversal tables
// packed as the kernels read them (asdx/frontend_tables.h), in double or float,
// by one thread instead of one block's threads; the GCC-PHAT peak search in its CUDA
// form (stereo::gcc_scan) and its CPU form (stereo::gcc_peak) (tests/test_features_stereo.py);
// the CPU thread pool's chunking (cpu::parallel_for, cpu::parallel_for_weighted), observed
// from inside (tests/test_threads.py). And the ASDX_ISA resolution for a pretended CPU
// (resolve_isa), so that a host with every path still tests the error for a path the CPU lacks.
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend_tables.h"
#include "asdx/mel.h"
#include "asdx/stereo.h"
#include "bindings/common.h"
#include "cpu/isa.h"
#include "cpu/parallel.h"

namespace asdx::bindings {
namespace {

struct NoBarrier {
  void operator()() const {}
};

int checked_size(const DoubleArray& re, const DoubleArray& im) {
  require(re.ndim() == 1 && im.ndim() == 1 && re.size() == im.size(), "re and im must be 1-D of one length");
  const int64_t n = re.size();
  require(fft::is_power_of_two(n) && n >= 2 && n <= 65536, "length must be a power of two in [2, 65536]");
  return static_cast<int>(n);
}

// Loads x into bit-reversed order and runs fft::forward in place, as the kernels do, reading the
// twiddles and the bit reversal from a table blob packed exactly as for the kernels (in Real).
template <class Real>
void transform(const double* x_re, const double* x_im, int n, std::vector<Real>& re, std::vector<Real>& im) {
  const frontend::TableBlob blob =
      frontend::detail::pack<Real>(n, std::vector<double>(n, 1.0), mel::SparseFilterbank{});
  const frontend::TableView<Real> t = frontend::view_tables<Real>(blob.bytes.data(), blob.offsets.data());
  re.assign(n, Real(0));
  im.assign(n, Real(0));
  for (int i = 0; i < n; ++i) {
    re[t.bit_reversal[i]] = static_cast<Real>(x_re[i]);
    im[t.bit_reversal[i]] = static_cast<Real>(x_im[i]);
  }
  fft::forward(re.data(), im.data(), n, t.twiddle_re, t.twiddle_im, 0, 1, NoBarrier{});
}

template <class Real>
py::tuple fft_forward_typed(const DoubleArray& x_re, const DoubleArray& x_im) {
  const int n = checked_size(x_re, x_im);
  std::vector<Real> re, im;
  transform<Real>(x_re.data(), x_im.data(), n, re, im);
  DoubleArray out_re(n), out_im(n);
  for (int k = 0; k < n; ++k) {
    out_re.mutable_data()[k] = static_cast<double>(re[k]);
    out_im.mutable_data()[k] = static_cast<double>(im[k]);
  }
  return py::make_tuple(out_re, out_im);
}

// Two real frames a and b packed as a + j b into one transform, then unpacked per bin
// (fft::unpack_powers_at), as the log-mel and Kaldi kernels do: |A[k]|^2, |B[k]|^2, k = 0..n/2.
template <class Real>
py::tuple packed_powers_typed(const DoubleArray& a, const DoubleArray& b) {
  const int n = checked_size(a, b);
  std::vector<Real> re, im;
  transform<Real>(a.data(), b.data(), n, re, im);
  FloatArray power_a(n / 2 + 1), power_b(n / 2 + 1);
  for (int k = 0; k <= n / 2; ++k) {
    fft::unpack_powers_at(re.data(), im.data(), n, k, power_a.mutable_data(), power_b.mutable_data());
  }
  return py::make_tuple(power_a, power_b);
}

asdx::cpu::Isa isa_from_name(const std::string& name) {
  for (const auto isa : {asdx::cpu::Isa::baseline, asdx::cpu::Isa::avx2, asdx::cpu::Isa::avx512}) {
    if (name == asdx::cpu::isa_name(isa)) return isa;
  }
  throw std::invalid_argument("best: must be 'baseline', 'avx2' or 'avx512', got '" + name + "'");
}

// The peak (value, lag) over lags [-max_lag, max_lag] of a correlation of length n (a power of two),
// by stereo::gcc_scan in one thread (cpu = false) or by stereo::gcc_peak (cpu = true), in Real.
template <class Real>
py::tuple gcc_peak_typed(const DoubleArray& correlation, int max_lag, bool cpu) {
  const int64_t n = correlation.size();
  require(correlation.ndim() == 1 && fft::is_power_of_two(n) && n >= 2, "correlation: 1-D, a power-of-two length");
  require(max_lag >= 0 && max_lag < n / 2, "max_lag must be in [0, n/2)");
  const std::vector<Real> re(correlation.data(), correlation.data() + n);
  float value;
  int lag;
  if (cpu) {
    stereo::gcc_peak(re.data(), static_cast<int>(n), max_lag, value, lag);
  } else {
    stereo::gcc_scan(re.data(), static_cast<int>(n), -max_lag, 1, max_lag, value, lag);
  }
  return py::make_tuple(value, lag);
}

// Records the (begin, end) of every body call, from whichever thread makes it.
class ChunkLog {
 public:
  void add(int64_t begin, int64_t end) {
    std::lock_guard<std::mutex> lock(mutex_);
    chunks_.emplace_back(begin, end);
  }
  std::vector<std::pair<int64_t, int64_t>> chunks() const { return chunks_; }

 private:
  std::mutex mutex_;
  std::vector<std::pair<int64_t, int64_t>> chunks_;
};

// The body the chunk tests run: logs its chunk, or (nested) the chunks of a
// parallel_for over its own range, then throws if its chunk starts at or after throw_from.
void logged_body(ChunkLog& log, int64_t begin, int64_t end, int64_t throw_from, bool nested) {
  if (nested) {
    asdx::cpu::parallel_for(end - begin, 1, [&](int64_t b, int64_t e) { log.add(begin + b, begin + e); });
  } else {
    log.add(begin, end);
  }
  if (throw_from >= 0 && begin >= throw_from) throw std::runtime_error("chunk at " + std::to_string(begin));
}

}  // namespace

void bind_testing(py::module_& m) {
  py::module_ t = m.def_submodule(
      "testing", "Test-only entry points (CUDA device code run on the host, ASDX_ISA for a pretended CPU, the CPU "
      "thread pool's chunks); not API.");
  t.def(
      "fft_forward",
      [](const DoubleArray& re, const DoubleArray& im, bool float32) {
        return float32 ? fft_forward_typed<float>(re, im) : fft_forward_typed<double>(re, im);
      },
      py::arg("re"), py::arg("im"), py::arg("float32"));
  t.def(
      "fft_packed_powers",
      [](const DoubleArray& a, const DoubleArray& b, bool float32) {
        return float32 ? packed_powers_typed<float>(a, b) : packed_powers_typed<double>(a, b);
      },
      py::arg("a"), py::arg("b"), py::arg("float32"));
  t.def(
      "resolve_isa",
      [](const std::optional<std::string>& value, const std::string& best) {
        return std::string(asdx::cpu::isa_name(
            asdx::cpu::resolve_isa(value ? value->c_str() : nullptr, isa_from_name(best))));
      },
      py::arg("value"), py::arg("best"),
      "The path ASDX_ISA=value selects on a CPU whose best path is `best` (value None: unset).");
  t.def(
      "gcc_peak",
      [](const DoubleArray& correlation, int max_lag, bool float32, bool cpu) {
        return float32 ? gcc_peak_typed<float>(correlation, max_lag, cpu)
                       : gcc_peak_typed<double>(correlation, max_lag, cpu);
      },
      py::arg("correlation"), py::arg("max_lag"), py::arg("float32"), py::arg("cpu"));
  t.def(
      "parallel_chunks",
      [](int64_t n, int64_t min_chunk, int64_t throw_from, bool nested) {
        ChunkLog log;
        std::string error;
        try {
          asdx::cpu::parallel_for(
              n, min_chunk, [&](int64_t begin, int64_t end) { logged_body(log, begin, end, throw_from, nested); });
        } catch (const std::exception& e) {
          error = e.what();
        }
        return py::make_tuple(log.chunks(), error);
      },
      "(chunks, error): the (begin, end) of parallel_for's body calls over [0, n), and the message of the "
      "exception it rethrew ('' if none). A chunk starting at or after throw_from (>= 0) throws "
      "'chunk at <begin>' after logging itself; nested: each body runs a parallel_for over its range.",
      py::arg("n"), py::arg("min_chunk"), py::arg("throw_from") = -1, py::arg("nested") = false);
  t.def(
      "parallel_chunks_weighted",
      [](const Int64Array& offsets, int64_t per_item, int64_t min_cost) {
        require(offsets.ndim() == 1 && offsets.size() >= 1, "offsets must be 1-D with n + 1 entries");
        ChunkLog log;
        asdx::cpu::parallel_for_weighted(offsets.data(), offsets.size() - 1, per_item, min_cost,
                                         [&](int64_t begin, int64_t end) { log.add(begin, end); });
        return log.chunks();
      },
      "The (begin, end) of parallel_for_weighted's body calls over the items that offsets delimits.",
      py::arg("offsets"), py::arg("per_item"), py::arg("min_cost"));
}

}  // namespace asdx::bindings
