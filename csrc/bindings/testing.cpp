// asdx._C.testing: test-only entry points, not part of asdx's API. They run
// device code on the host so that CPU-only tests check it (tests/test_cuda_fft_host.py):
// the CUDA frontends' FFT (asdx/fft.h) with the twiddle and bit-reversal tables
// packed as the kernels read them (asdx/frontend_tables.h), in double or float,
// by one thread instead of one block's threads. And the ASDX_ISA resolution for a pretended CPU
// (resolve_isa), so that a host with every path still tests the error for a path the CPU lacks.
#include <optional>
#include <string>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend_tables.h"
#include "asdx/mel.h"
#include "bindings/common.h"
#include "cpu/isa.h"

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

}  // namespace

void bind_testing(py::module_& m) {
  py::module_ t = m.def_submodule(
      "testing", "Test-only entry points (CUDA device code run on the host, ASDX_ISA for a pretended CPU); not API.");
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
}

}  // namespace asdx::bindings
