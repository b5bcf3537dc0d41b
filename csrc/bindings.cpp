// The only pybind11 file: converts arrays, releases the GIL, dispatches.
// Validation with user-facing messages lives in the Python wrappers
// (asdx.features); the checks here only guard memory safety.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/frontend_tables.h"
#include "asdx/gmm.h"
#include "asdx/mahalanobis.h"
#include "asdx/gamma_kernels.h"
#include "cpu/parallel.h"

namespace py = pybind11;
using namespace asdx::frontend;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void check_fft_size(int n, const char* what) {
  require(asdx::fft::is_power_of_two(n) && n >= 4 && n <= 65536,
          std::string(what) + " must be a power of two in [4, 65536], got " + std::to_string(n));
}

LogmelConfig make_logmel(int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax) {
  check_fft_size(n_fft, "n_fft");
  require(hop >= 1, "hop_length must be >= 1");
  require(n_mels >= 1, "n_mels must be >= 1");
  require(sample_rate > 0, "sample_rate must be > 0");
  require(0.0 <= fmin && fmin < fmax && fmax <= sample_rate / 2.0, "need 0 <= fmin < fmax <= sample_rate / 2");
  LogmelConfig c;
  c.sample_rate = sample_rate;
  c.n_fft = n_fft;
  c.hop = hop;
  c.n_mels = n_mels;
  c.fmin = fmin;
  c.fmax = fmax;
  return c;
}

KaldiConfig make_kaldi(int sample_rate, int frame_length, int frame_shift, int n_mels, double low_freq,
                       double high_freq, double preemphasis, bool beats_normalise) {
  require(sample_rate > 0 && frame_length >= 2 && frame_shift >= 1 && n_mels >= 1, "invalid Kaldi fbank geometry");
  KaldiConfig c;
  c.sample_rate = sample_rate;
  c.frame_length = frame_length;
  c.frame_shift = frame_shift;
  int padded = 1;
  while (padded < frame_length) padded <<= 1;
  c.padded_length = padded;
  c.n_mels = n_mels;
  c.low_freq = low_freq;
  c.high_freq = high_freq;
  c.preemphasis = preemphasis;
  c.beats_normalise = beats_normalise;
  return c;
}

// (n_signals, n_samples) float32 view of a contiguous array of any rank >= 1.
std::pair<int64_t, int64_t> signal_shape(const FloatArray& x) {
  require(x.ndim() >= 1, "expected an array of rank >= 1");
  const int64_t n_samples = x.shape(x.ndim() - 1);
  require(n_samples > 0, "signals must have at least one sample");
  return {x.size() / n_samples, n_samples};
}

// ---- Scoring kernels (Mahalanobis, diagonal GMM): the dtype of the queries
// picks the float32 or float64 kernel; the other arrays are cast to it.
template <class T>
using ArrayT = py::array_t<T, py::array::c_style | py::array::forcecast>;

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

// --- gamma: ragged score sets as (values, offsets).
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

py::tuple table_blob_to_python(const TableBlob& blob) {
  py::array_t<uint8_t> bytes(static_cast<py::ssize_t>(blob.bytes.size()));
  std::copy(blob.bytes.begin(), blob.bytes.end(), bytes.mutable_data());
  return py::make_tuple(bytes, py::cast(std::vector<int64_t>(blob.offsets.begin(), blob.offsets.end())));
}

// Offsets of a cached table blob, checked against the slots the kernels read.
const int64_t* table_offsets(const std::vector<int64_t>& offsets) {
  require(offsets.size() == kTableSlots, "table offsets: expected " + std::to_string(kTableSlots) + " entries");
  return offsets.data();
}

py::dict build_info() {
  py::dict info;
#ifdef ASDX_WITH_CUDA
  info["cuda_compiled"] = true;
  info["cuda_architectures"] = std::string(ASDX_CUDA_ARCHITECTURES);
  info["cuda_runtime_version"] = std::string(ASDX_CUDA_VERSION);
#else
  info["cuda_compiled"] = false;
  info["cuda_architectures"] = std::string();
  info["cuda_runtime_version"] = std::string();
#endif
  info["compiler"] = std::string(ASDX_CXX_COMPILER);
  info["build_type"] = std::string(ASDX_BUILD_TYPE);
  return info;
}

}  // namespace

#ifdef ASDX_WITH_CUDA
namespace asdx::cuda {
int device_count();
}
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "asdx compiled kernels (CPU, and CUDA when built with nvcc)";
  m.def("build_info", &build_info);
  m.def("num_threads", &asdx::cpu::num_threads);
  m.def("set_num_threads", &asdx::cpu::set_num_threads, py::arg("threads"));
  m.def("available_cores", &asdx::cpu::available_cores);
  m.def("cuda_device_count", []() {
#ifdef ASDX_WITH_CUDA
    return asdx::cuda::device_count();
#else
    return 0;
#endif
  });

  m.def(
      "logmel_dcase_cpu",
      [](const FloatArray& x, int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax,
         bool float32) {
        const LogmelConfig c = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
        const auto [n_signals, n_samples] = signal_shape(x);
        const int64_t frames = logmel_frames(c, n_samples);
        FloatArray out({n_signals, frames, static_cast<int64_t>(n_mels)});
        const float* in = x.data();
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          logmel_dcase_cpu(in, n_signals, n_samples, c, float32, o);
        }
        return out;
      },
      py::arg("signals"), py::arg("sample_rate"), py::arg("n_fft"), py::arg("hop_length"), py::arg("n_mels"),
      py::arg("fmin"), py::arg("fmax"), py::arg("float32"));

  m.def(
      "kaldi_fbank_cpu",
      [](const FloatArray& x, int sample_rate, int frame_length, int frame_shift, int n_mels, double low_freq,
         double high_freq, double preemphasis, bool beats_normalise, bool float32) {
        const KaldiConfig c =
            make_kaldi(sample_rate, frame_length, frame_shift, n_mels, low_freq, high_freq, preemphasis, beats_normalise);
        const auto [n_signals, n_samples] = signal_shape(x);
        const int64_t frames = kaldi_frames(c, n_samples);
        FloatArray out({n_signals, frames, static_cast<int64_t>(n_mels)});
        const float* in = x.data();
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          kaldi_fbank_cpu(in, n_signals, n_samples, c, float32, o);
        }
        return out;
      },
      py::arg("signals"), py::arg("sample_rate"), py::arg("frame_length"), py::arg("frame_shift"), py::arg("n_mels"),
      py::arg("low_freq"), py::arg("high_freq"), py::arg("preemphasis"), py::arg("beats_normalise"),
      py::arg("float32"));

  m.def(
      "stereo_features_cpu",
      [](const FloatArray& x, int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax, int max_lag,
         bool float32) {
        require(x.ndim() == 3 && x.shape(1) == 2, "stereo input must be (batch, 2, samples)");
        require(max_lag >= 0, "max_lag must be >= 0");
        StereoConfig c;
        c.mel = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
        c.max_lag = max_lag;
        const int64_t batch = x.shape(0);
        const int64_t n_samples = x.shape(2);
        require(n_samples > 0, "signals must have at least one sample");
        const int64_t frames = logmel_frames(c.mel, n_samples);
        FloatArray bands({batch, static_cast<int64_t>(kStereoBandChannels), frames, static_cast<int64_t>(n_mels)});
        FloatArray ipd({batch, int64_t{2}, frames, static_cast<int64_t>(n_fft / 2 + 1)});
        FloatArray gcc({batch, frames, int64_t{2}});
        const float* in = x.data();
        float* pb = bands.mutable_data();
        float* pi = ipd.mutable_data();
        float* pg = gcc.mutable_data();
        {
          py::gil_scoped_release release;
          stereo_features_cpu(in, batch, n_samples, c, float32, pb, pi, pg);
        }
        return py::make_tuple(bands, ipd, gcc);
      },
      py::arg("stereo"), py::arg("sample_rate"), py::arg("n_fft"), py::arg("hop_length"), py::arg("n_mels"),
      py::arg("fmin"), py::arg("fmax"), py::arg("max_lag"), py::arg("float32"));

  // Constant tables for the CUDA frontends: (uint8 blob, offsets), uploaded once per
  // (configuration, device) by asdx._cuda.device_table.
  m.def(
      "logmel_tables",
      [](int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax, bool float32) {
        const LogmelConfig c = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
        return table_blob_to_python(float32 ? logmel_tables<float>(c) : logmel_tables<double>(c));
      },
      py::arg("sample_rate"), py::arg("n_fft"), py::arg("hop_length"), py::arg("n_mels"), py::arg("fmin"),
      py::arg("fmax"), py::arg("float32"));
  m.def(
      "kaldi_tables",
      [](int sample_rate, int frame_length, int frame_shift, int n_mels, double low_freq, double high_freq,
         double preemphasis, bool beats_normalise, bool float32) {
        const KaldiConfig c =
            make_kaldi(sample_rate, frame_length, frame_shift, n_mels, low_freq, high_freq, preemphasis, beats_normalise);
        return table_blob_to_python(float32 ? kaldi_tables<float>(c) : kaldi_tables<double>(c));
      },
      py::arg("sample_rate"), py::arg("frame_length"), py::arg("frame_shift"), py::arg("n_mels"), py::arg("low_freq"),
      py::arg("high_freq"), py::arg("preemphasis"), py::arg("beats_normalise"), py::arg("float32"));

  // ---- Scoring kernels: Mahalanobis (factors L with P = L L^T) and diagonal GMM.
  m.def(
      "mahalanobis_cpu",
      [](const py::array& queries, const py::array& means, const py::array& factors) {
        return is_float32(queries) ? mahalanobis_cpu_typed<float>(queries, means, factors)
                                   : mahalanobis_cpu_typed<double>(queries, means, factors);
      },
      py::arg("queries"), py::arg("means"), py::arg("factors"));
  m.def(
      "gmm_diag_loglik_cpu",
      [](const py::array& queries, const py::array& log_weights, const py::array& means, const py::array& variances) {
        return is_float32(queries) ? gmm_diag_cpu_typed<float>(queries, log_weights, means, variances)
                                   : gmm_diag_cpu_typed<double>(queries, log_weights, means, variances);
      },
      py::arg("queries"), py::arg("log_weights"), py::arg("means"), py::arg("variances"));
  // Bytes of device scratch gmm_diag_loglik_cuda needs (defined in CPU-only builds too).
  m.def(
      "gmm_diag_scratch_bytes",
      [](int64_t k, int64_t dims, bool float32) {
        require(k >= 1 && dims >= 1, "gmm_diag_scratch_bytes: k and dims must be >= 1");
        return asdx::gmm::gmm_diag_scratch_bytes(k, dims, float32);
      },
      py::arg("k"), py::arg("dims"), py::arg("float32"));

  // --- gamma fit, quantile and special functions (asdx.scoring.gamma)
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

#ifdef ASDX_WITH_CUDA
  // CUDA entry points take raw device pointers (from torch tensors) so this
  // module never links libtorch; the caller allocates outputs and passes its stream.
  m.def(
      "logmel_dcase_cuda",
      [](uintptr_t in, int64_t n_signals, int64_t n_samples, uintptr_t out, uintptr_t tables,
         const std::vector<int64_t>& offsets, uintptr_t stream, int sample_rate, int n_fft, int hop, int n_mels,
         double fmin, double fmax, bool float32) {
        const LogmelConfig c = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        logmel_dcase_cuda(reinterpret_cast<const float*>(in), n_signals, n_samples, c, float32,
                          reinterpret_cast<const unsigned char*>(tables), o, reinterpret_cast<float*>(out),
                          reinterpret_cast<void*>(stream));
      },
      py::arg("signals_ptr"), py::arg("n_signals"), py::arg("n_samples"), py::arg("out_ptr"), py::arg("tables_ptr"),
      py::arg("table_offsets"), py::arg("stream"), py::arg("sample_rate"), py::arg("n_fft"), py::arg("hop_length"),
      py::arg("n_mels"), py::arg("fmin"), py::arg("fmax"), py::arg("float32"));
  m.def(
      "kaldi_fbank_cuda",
      [](uintptr_t in, int64_t n_signals, int64_t n_samples, uintptr_t out, uintptr_t tables,
         const std::vector<int64_t>& offsets, uintptr_t stream, int sample_rate, int frame_length, int frame_shift,
         int n_mels, double low_freq, double high_freq, double preemphasis, bool beats_normalise, bool float32) {
        const KaldiConfig c =
            make_kaldi(sample_rate, frame_length, frame_shift, n_mels, low_freq, high_freq, preemphasis, beats_normalise);
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        kaldi_fbank_cuda(reinterpret_cast<const float*>(in), n_signals, n_samples, c, float32,
                         reinterpret_cast<const unsigned char*>(tables), o, reinterpret_cast<float*>(out),
                         reinterpret_cast<void*>(stream));
      },
      py::arg("signals_ptr"), py::arg("n_signals"), py::arg("n_samples"), py::arg("out_ptr"), py::arg("tables_ptr"),
      py::arg("table_offsets"), py::arg("stream"), py::arg("sample_rate"), py::arg("frame_length"),
      py::arg("frame_shift"), py::arg("n_mels"), py::arg("low_freq"), py::arg("high_freq"), py::arg("preemphasis"),
      py::arg("beats_normalise"), py::arg("float32"));
  m.def(
      "stereo_features_cuda",
      [](uintptr_t in, int64_t batch, int64_t n_samples, uintptr_t bands, uintptr_t ipd, uintptr_t gcc,
         uintptr_t tables, const std::vector<int64_t>& offsets, uintptr_t stream, int sample_rate, int n_fft, int hop,
         int n_mels, double fmin, double fmax, int max_lag, bool float32) {
        require(max_lag >= 0, "max_lag must be >= 0");
        StereoConfig c;
        c.mel = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
        c.max_lag = max_lag;
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        stereo_features_cuda(reinterpret_cast<const float*>(in), batch, n_samples, c, float32,
                             reinterpret_cast<const unsigned char*>(tables), o, reinterpret_cast<float*>(bands),
                             reinterpret_cast<float*>(ipd), reinterpret_cast<float*>(gcc),
                             reinterpret_cast<void*>(stream));
      },
      py::arg("stereo_ptr"), py::arg("batch"), py::arg("n_samples"), py::arg("bands_ptr"), py::arg("ipd_ptr"),
      py::arg("gcc_ptr"), py::arg("tables_ptr"), py::arg("table_offsets"), py::arg("stream"), py::arg("sample_rate"),
      py::arg("n_fft"), py::arg("hop_length"), py::arg("n_mels"), py::arg("fmin"), py::arg("fmax"), py::arg("max_lag"),
      py::arg("float32"));
  // ---- Scoring kernels on CUDA: device pointers, outputs allocated by the caller.
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

  // --- gamma on CUDA: float64 values, int64 offsets (n_sets + 1, validated by the caller),
  // outputs allocated by the caller: four float64, one int32 and one int8 array of n_sets.
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
}
