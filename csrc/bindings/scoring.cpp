// Scoring kernels: Mahalanobis (factors L with P = L L^T) and the diagonal GMM
// log-likelihood, each CPU entry point with its CUDA twin beside it. On the CPU
// the dtype of the queries picks the float32 or float64 kernel; the other arrays
// are cast to it.
#include <utility>

#include "asdx/gmm.h"
#include "asdx/mahalanobis.h"
#include "bindings/common.h"

namespace asdx::bindings {
namespace {

bool is_float32(const py::array& a) { return a.dtype().is(py::dtype::of<float>()); }

template <class T>
py::array mahalanobis_cpu_typed(const py::array& queries_in, const py::array& means_in, const py::array& factors_in) {
  const auto queries = ArrayT<T>::ensure(queries_in);
  const auto means = ArrayT<T>::ensure(means_in);
  const auto factors = ArrayT<T>::ensure(factors_in);
  require(queries && means && factors, "mahalanobis: arrays must be numeric");
  require(queries.ndim() == 2 && means.ndim() == 2 && factors.ndim() == 3, "mahalanobis: bad ranks");
  const int64_t n = queries.shape(0), dims = queries.shape(1), k = means.shape(0);
  require(means.shape(1) == dims && factors.shape(0) == k && factors.shape(1) == dims && factors.shape(2) == dims,
          "mahalanobis: shapes do not match");
  ArrayT<T> out({n, k});
  const T* q = queries.data();
  const T* m = means.data();
  const T* f = factors.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    asdx::mahalanobis::mahalanobis_cpu(q, n, dims, m, f, k, o);
  }
  return std::move(out);
}

template <class T>
py::array gmm_diag_cpu_typed(const py::array& queries_in, const py::array& log_weights_in, const py::array& means_in,
                             const py::array& variances_in) {
  const auto queries = ArrayT<T>::ensure(queries_in);
  const auto log_weights = ArrayT<double>::ensure(log_weights_in);
  const auto means = ArrayT<T>::ensure(means_in);
  const auto variances = ArrayT<T>::ensure(variances_in);
  require(queries && log_weights && means && variances, "gmm_diag: arrays must be numeric");
  require(queries.ndim() == 2 && log_weights.ndim() == 1 && means.ndim() == 2 && variances.ndim() == 2,
          "gmm_diag: bad ranks");
  const int64_t n = queries.shape(0), dims = queries.shape(1), k = means.shape(0);
  require(log_weights.shape(0) == k && means.shape(1) == dims && variances.shape(0) == k &&
              variances.shape(1) == dims,
          "gmm_diag: shapes do not match");
  ArrayT<double> out({n});
  const T* q = queries.data();
  const double* w = log_weights.data();
  const T* m = means.data();
  const T* v = variances.data();
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    asdx::gmm::gmm_diag_loglik_cpu(q, n, dims, w, m, v, k, o);
  }
  return std::move(out);
}

}  // namespace

void bind_scoring(py::module_& m) {
  // ---- Mahalanobis distances to k (mean, factor) pairs
  m.def(
      "mahalanobis_cpu",
      [](const py::array& queries, const py::array& means, const py::array& factors) {
        return is_float32(queries) ? mahalanobis_cpu_typed<float>(queries, means, factors)
                                   : mahalanobis_cpu_typed<double>(queries, means, factors);
      },
      py::arg("queries"), py::arg("means"), py::arg("factors"));
#ifdef ASDX_WITH_CUDA
  m.def(
      "mahalanobis_cuda",
      [](uintptr_t queries, int64_t n, int64_t dims, uintptr_t means, uintptr_t factors, int64_t k, uintptr_t out,
         uintptr_t stream, bool float32) {
        require(n >= 0 && dims >= 1 && k >= 1, "mahalanobis_cuda: bad sizes");
        py::gil_scoped_release release;
        void* s = reinterpret_cast<void*>(stream);
        if (float32) {
          asdx::mahalanobis::mahalanobis_cuda(reinterpret_cast<const float*>(queries), n, dims,
                                              reinterpret_cast<const float*>(means),
                                              reinterpret_cast<const float*>(factors), k,
                                              reinterpret_cast<float*>(out), s);
        } else {
          asdx::mahalanobis::mahalanobis_cuda(reinterpret_cast<const double*>(queries), n, dims,
                                              reinterpret_cast<const double*>(means),
                                              reinterpret_cast<const double*>(factors), k,
                                              reinterpret_cast<double*>(out), s);
        }
      },
      py::arg("queries_ptr"), py::arg("n"), py::arg("dims"), py::arg("means_ptr"), py::arg("factors_ptr"),
      py::arg("k"), py::arg("out_ptr"), py::arg("stream"), py::arg("float32"));
#endif

  // ---- Diagonal-covariance GMM log-likelihood
  m.def(
      "gmm_diag_loglik_cpu",
      [](const py::array& queries, const py::array& log_weights, const py::array& means, const py::array& variances) {
        return is_float32(queries) ? gmm_diag_cpu_typed<float>(queries, log_weights, means, variances)
                                   : gmm_diag_cpu_typed<double>(queries, log_weights, means, variances);
      },
      py::arg("queries"), py::arg("log_weights"), py::arg("means"), py::arg("variances"));
#ifdef ASDX_WITH_CUDA
  m.def(
      "gmm_diag_loglik_cuda",
      [](uintptr_t queries, int64_t n, int64_t dims, uintptr_t log_weights, uintptr_t means, uintptr_t variances,
         int64_t k, uintptr_t out, uintptr_t scratch, uintptr_t stream, bool float32) {
        require(n >= 0 && dims >= 1 && k >= 1, "gmm_diag_loglik_cuda: bad sizes");
        py::gil_scoped_release release;
        void* s = reinterpret_cast<void*>(stream);
        void* work = reinterpret_cast<void*>(scratch);  // gmm_diag_scratch_bytes(k, dims, float32) bytes
        const double* w = reinterpret_cast<const double*>(log_weights);
        double* o = reinterpret_cast<double*>(out);
        if (float32) {
          asdx::gmm::gmm_diag_loglik_cuda(reinterpret_cast<const float*>(queries), n, dims, w,
                                          reinterpret_cast<const float*>(means),
                                          reinterpret_cast<const float*>(variances), k, o, work, s);
        } else {
          asdx::gmm::gmm_diag_loglik_cuda(reinterpret_cast<const double*>(queries), n, dims, w,
                                          reinterpret_cast<const double*>(means),
                                          reinterpret_cast<const double*>(variances), k, o, work, s);
        }
      },
      py::arg("queries_ptr"), py::arg("n"), py::arg("dims"), py::arg("log_weights_ptr"), py::arg("means_ptr"),
      py::arg("variances_ptr"), py::arg("k"), py::arg("out_ptr"), py::arg("scratch_ptr"), py::arg("stream"),
      py::arg("float32"));
#endif
  // Bytes of device scratch gmm_diag_loglik_cuda needs (defined in CPU-only builds too).
  m.def(
      "gmm_diag_scratch_bytes",
      [](int64_t k, int64_t dims, bool float32) {
        require(k >= 1 && dims >= 1, "gmm_diag_scratch_bytes: k and dims must be >= 1");
        return asdx::gmm::gmm_diag_scratch_bytes(k, dims, float32);
      },
      py::arg("k"), py::arg("dims"), py::arg("float32"));
}

}  // namespace asdx::bindings
