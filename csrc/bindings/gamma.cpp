// Gamma fit, quantile and special functions (asdx.scoring.gamma), each CPU entry
// point with its CUDA twin beside it. Score sets are ragged: (values, offsets).
#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <utility>

#include "asdx/gamma_kernels.h"
#include "bindings/common.h"

namespace asdx::bindings {
namespace {

int64_t check_offsets(const DoubleArray& values, const Int64Array& offsets) {
  require(values.ndim() == 1, "values must be 1-D");
  require(offsets.ndim() == 1 && offsets.size() >= 1, "offsets must be 1-D with n_sets + 1 entries");
  const int64_t* o = offsets.data();
  require(o[0] == 0, "offsets[0] must be 0");
  for (py::ssize_t i = 1; i < offsets.size(); ++i) require(o[i] >= o[i - 1], "offsets must be non-decreasing");
  require(o[offsets.size() - 1] == values.size(), "offsets[-1] must equal len(values)");
  return offsets.size() - 1;
}

void require_same_size(std::initializer_list<const DoubleArray*> arrays) {
  const py::ssize_t n = (*arrays.begin())->size();
  for (const DoubleArray* a : arrays) require(a->ndim() == 1 && a->size() == n, "arrays must be 1-D of one length");
}

}  // namespace

void bind_gamma(py::module_& m) {
  // ---- Fit per score set (method: MLE, or MPS for small or degenerate sets)
  m.def(
      "gamma_fit_cpu",
      [](const DoubleArray& values, const Int64Array& offsets, bool fixed_loc, double loc, int32_t mode,
         int64_t min_mle_scores) {
        const int64_t n_sets = check_offsets(values, offsets);
        require(mode >= 0 && mode <= 2, "mode must be 0 (auto), 1 (mle) or 2 (mps)");  // gamma::FitMode
        DoubleArray shape(n_sets), loc_out(n_sets), scale(n_sets), loglik(n_sets);
        py::array_t<int32_t> status(n_sets);
        py::array_t<int8_t> method(n_sets);
        const asdx::gamma::FitOutputs out{shape.mutable_data(),  loc_out.mutable_data(), scale.mutable_data(),
                                          loglik.mutable_data(), status.mutable_data(),  method.mutable_data()};
        const double* v = values.data();
        const int64_t* o = offsets.data();
        {
          py::gil_scoped_release release;
          asdx::gamma::fit_cpu(v, o, n_sets, fixed_loc, loc, mode, min_mle_scores, out);
        }
        return py::make_tuple(shape, loc_out, scale, loglik, status, method);
      },
      py::arg("values"), py::arg("offsets"), py::arg("fixed_loc"), py::arg("loc"), py::arg("mode"),
      py::arg("min_mle_scores"));
#ifdef ASDX_WITH_CUDA
  // float64 values, int64 offsets (n_sets + 1, validated by the caller), outputs allocated by
  // the caller: four float64, one int32 and one int8 array of n_sets.
  m.def(
      "gamma_fit_cuda",
      [](uintptr_t values, uintptr_t offsets, int64_t n_sets, bool fixed_loc, double loc, uintptr_t shape,
         uintptr_t loc_out, uintptr_t scale, uintptr_t loglik, uintptr_t status, uintptr_t method, uintptr_t stream) {
        require(n_sets >= 0, "n_sets must be >= 0");
        const asdx::gamma::FitOutputs out{reinterpret_cast<double*>(shape),  reinterpret_cast<double*>(loc_out),
                                          reinterpret_cast<double*>(scale),  reinterpret_cast<double*>(loglik),
                                          reinterpret_cast<int32_t*>(status), reinterpret_cast<int8_t*>(method)};
        py::gil_scoped_release release;
        asdx::gamma::fit_cuda(reinterpret_cast<const double*>(values), reinterpret_cast<const int64_t*>(offsets),
                              n_sets, fixed_loc, loc, out, reinterpret_cast<void*>(stream));
      },
      py::arg("values_ptr"), py::arg("offsets_ptr"), py::arg("n_sets"), py::arg("fixed_loc"), py::arg("loc"),
      py::arg("shape_ptr"), py::arg("loc_ptr"), py::arg("scale_ptr"), py::arg("loglik_ptr"), py::arg("status_ptr"),
      py::arg("method_ptr"), py::arg("stream"));
#endif

  // ---- Quantile (the threshold)
  m.def(
      "gamma_ppf_cpu",
      [](const DoubleArray& q, const DoubleArray& shape, const DoubleArray& loc, const DoubleArray& scale) {
        require_same_size({&q, &shape, &loc, &scale});
        const int64_t n = q.size();
        DoubleArray out(n);
        const double *pq = q.data(), *pa = shape.data(), *pl = loc.data(), *ps = scale.data();
        double* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          asdx::gamma::ppf_cpu(pq, pa, pl, ps, n, po);
        }
        return out;
      },
      py::arg("q"), py::arg("shape"), py::arg("loc"), py::arg("scale"));
#ifdef ASDX_WITH_CUDA
  m.def(
      "gamma_ppf_cuda",
      [](uintptr_t q, uintptr_t shape, uintptr_t loc, uintptr_t scale, int64_t n, uintptr_t out, uintptr_t stream) {
        py::gil_scoped_release release;
        asdx::gamma::ppf_cuda(reinterpret_cast<const double*>(q), reinterpret_cast<const double*>(shape),
                              reinterpret_cast<const double*>(loc), reinterpret_cast<const double*>(scale), n,
                              reinterpret_cast<double*>(out), reinterpret_cast<void*>(stream));
      },
      py::arg("q_ptr"), py::arg("shape_ptr"), py::arg("loc_ptr"), py::arg("scale_ptr"), py::arg("n"),
      py::arg("out_ptr"), py::arg("stream"));
#endif

  // ---- Special functions (asdx.scoring.special; CPU only)
  m.def(
      "gamma_special_cpu",
      [](const std::string& name, const DoubleArray& a, const DoubleArray& x, const DoubleArray& loc,
         const DoubleArray& scale) {
        static const std::pair<const char*, asdx::gamma::Special> kNames[] = {
            {"digamma", asdx::gamma::Special::kDigamma},           {"trigamma", asdx::gamma::Special::kTrigamma},
            {"gammainc", asdx::gamma::Special::kGammainc},         {"gammaincc", asdx::gamma::Special::kGammaincc},
            {"gammaincinv", asdx::gamma::Special::kGammaincinv}, {"gammainccinv", asdx::gamma::Special::kGammainccinv},
            {"logpdf", asdx::gamma::Special::kLogPdf}};
        const auto* found = std::find_if(std::begin(kNames), std::end(kNames),
                                         [&](const auto& entry) { return name == entry.first; });
        require(found != std::end(kNames), "unknown gamma special function '" + name + "'");
        require_same_size({&a, &x, &loc, &scale});
        const int64_t n = a.size();
        DoubleArray out(n);
        const double *pa = a.data(), *px = x.data(), *pl = loc.data(), *ps = scale.data();
        double* po = out.mutable_data();
        const asdx::gamma::Special function = found->second;
        {
          py::gil_scoped_release release;
          asdx::gamma::special_cpu(function, pa, px, pl, ps, n, po);
        }
        return out;
      },
      py::arg("function"), py::arg("a"), py::arg("x"), py::arg("loc"), py::arg("scale"));
}

}  // namespace asdx::bindings
