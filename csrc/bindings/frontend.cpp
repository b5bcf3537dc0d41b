// Frontends (DCASE log-mel, Kaldi fbank, stereo cues, the near/far residual view): each CPU entry point with
// its CUDA twin beside it, and the constant tables the CUDA kernels read.
#include <algorithm>
#include <utility>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/frontend_tables.h"
#include "asdx/stereo_view.h"
#include "bindings/common.h"

namespace asdx::bindings {
namespace {

using namespace asdx::frontend;

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

StereoConfig make_stereo(int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax, int max_lag) {
  require(max_lag >= 0, "max_lag must be >= 0");
  StereoConfig c;
  c.mel = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
  c.max_lag = max_lag;
  return c;
}

// (n_signals, n_samples) float32 view of a contiguous array of any rank >= 1.
std::pair<int64_t, int64_t> signal_shape(const FloatArray& x) {
  require(x.ndim() >= 1, "expected an array of rank >= 1");
  const int64_t n_samples = x.shape(x.ndim() - 1);
  require(n_samples > 0, "signals must have at least one sample");
  return {x.size() / n_samples, n_samples};
}

py::tuple table_blob_to_python(const TableBlob& blob) {
  py::array_t<uint8_t> bytes(static_cast<py::ssize_t>(blob.bytes.size()));
  std::copy(blob.bytes.begin(), blob.bytes.end(), bytes.mutable_data());
  return py::make_tuple(bytes, py::cast(std::vector<int64_t>(blob.offsets.begin(), blob.offsets.end())));
}

#ifdef ASDX_WITH_CUDA
// Offsets of a cached table blob, checked against the slots the kernels read.
const int64_t* table_offsets(const std::vector<int64_t>& offsets) {
  require(offsets.size() == kTableSlots, "table offsets: expected " + std::to_string(kTableSlots) + " entries");
  return offsets.data();
}

template <class T>
T* device(uintptr_t pointer) {
  return reinterpret_cast<T*>(pointer);
}
#endif

}  // namespace

void bind_frontend(py::module_& m) {
  // ---- DCASE log-mel
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
#ifdef ASDX_WITH_CUDA
  m.def(
      "logmel_dcase_cuda",
      [](uintptr_t in, int64_t n_signals, int64_t n_samples, uintptr_t out, uintptr_t tables,
         const std::vector<int64_t>& offsets, uintptr_t stream, int sample_rate, int n_fft, int hop, int n_mels,
         double fmin, double fmax, bool float32) {
        const LogmelConfig c = make_logmel(sample_rate, n_fft, hop, n_mels, fmin, fmax);
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        logmel_dcase_cuda(device<const float>(in), n_signals, n_samples, c, float32,
                          device<const unsigned char>(tables), o, device<float>(out), device<void>(stream));
      },
      py::arg("signals_ptr"), py::arg("n_signals"), py::arg("n_samples"), py::arg("out_ptr"), py::arg("tables_ptr"),
      py::arg("table_offsets"), py::arg("stream"), py::arg("sample_rate"), py::arg("n_fft"), py::arg("hop_length"),
      py::arg("n_mels"), py::arg("fmin"), py::arg("fmax"), py::arg("float32"));
#endif

  // ---- Kaldi fbank (BEATs)
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
#ifdef ASDX_WITH_CUDA
  m.def(
      "kaldi_fbank_cuda",
      [](uintptr_t in, int64_t n_signals, int64_t n_samples, uintptr_t out, uintptr_t tables,
         const std::vector<int64_t>& offsets, uintptr_t stream, int sample_rate, int frame_length, int frame_shift,
         int n_mels, double low_freq, double high_freq, double preemphasis, bool beats_normalise, bool float32) {
        const KaldiConfig c =
            make_kaldi(sample_rate, frame_length, frame_shift, n_mels, low_freq, high_freq, preemphasis, beats_normalise);
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        kaldi_fbank_cuda(device<const float>(in), n_signals, n_samples, c, float32,
                         device<const unsigned char>(tables), o, device<float>(out), device<void>(stream));
      },
      py::arg("signals_ptr"), py::arg("n_signals"), py::arg("n_samples"), py::arg("out_ptr"), py::arg("tables_ptr"),
      py::arg("table_offsets"), py::arg("stream"), py::arg("sample_rate"), py::arg("frame_length"),
      py::arg("frame_shift"), py::arg("n_mels"), py::arg("low_freq"), py::arg("high_freq"), py::arg("preemphasis"),
      py::arg("beats_normalise"), py::arg("float32"));
#endif

  // ---- Stereo cues: 7 band channels, per-bin IPD, GCC-PHAT peak
  m.def(
      "stereo_features_cpu",
      [](const FloatArray& x, int sample_rate, int n_fft, int hop, int n_mels, double fmin, double fmax, int max_lag,
         bool float32) {
        require(x.ndim() == 3 && x.shape(1) == 2, "stereo input must be (batch, 2, samples)");
        const StereoConfig c = make_stereo(sample_rate, n_fft, hop, n_mels, fmin, fmax, max_lag);
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
#ifdef ASDX_WITH_CUDA
  m.def(
      "stereo_features_cuda",
      [](uintptr_t in, int64_t batch, int64_t n_samples, uintptr_t bands, uintptr_t ipd, uintptr_t gcc,
         uintptr_t tables, const std::vector<int64_t>& offsets, uintptr_t stream, int sample_rate, int n_fft, int hop,
         int n_mels, double fmin, double fmax, int max_lag, bool float32) {
        const StereoConfig c = make_stereo(sample_rate, n_fft, hop, n_mels, fmin, fmax, max_lag);
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        stereo_features_cuda(device<const float>(in), batch, n_samples, c, float32,
                             device<const unsigned char>(tables), o, device<float>(bands), device<float>(ipd),
                             device<float>(gcc), device<void>(stream));
      },
      py::arg("stereo_ptr"), py::arg("batch"), py::arg("n_samples"), py::arg("bands_ptr"), py::arg("ipd_ptr"),
      py::arg("gcc_ptr"), py::arg("tables_ptr"), py::arg("table_offsets"), py::arg("stream"), py::arg("sample_rate"),
      py::arg("n_fft"), py::arg("hop_length"), py::arg("n_mels"), py::arg("fmin"), py::arg("fmax"), py::arg("max_lag"),
      py::arg("float32"));
#endif

  // ---- The near/far residual (view "w1"): (batch, 2, samples) -> (batch, samples)
  auto stereo_view_cpu = [](const FloatArray& x, void (*kernel)(const float*, int64_t, int64_t, float*)) {
    require(x.ndim() == 3 && x.shape(1) == 2, "stereo input must be (batch, 2, samples)");
    require(x.shape(2) >= stereo_view::kMinSamples, "stereo_view: clips need more than n_fft / 2 = 512 samples");
    const int64_t batch = x.shape(0);
    const int64_t n_samples = x.shape(2);
    FloatArray out({batch, n_samples});
    const float* in = x.data();
    float* o = out.mutable_data();
    {
      py::gil_scoped_release release;
      kernel(in, batch, n_samples, o);
    }
    return out;
  };
  m.def(
      "stereo_view_w1_cpu", [stereo_view_cpu](const FloatArray& x) { return stereo_view_cpu(x, stereo_view_w1_cpu); },
      py::arg("stereo"));
  // test-only: the CUDA kernels' schedule run on the host (csrc/cpu/stereo_view.cpp); not API
  m.def(
      "_stereo_view_w1_radix2_host",
      [stereo_view_cpu](const FloatArray& x) { return stereo_view_cpu(x, stereo_view_w1_radix2_host); },
      py::arg("stereo"));
  m.def("stereo_view_scratch_bytes", &stereo_view_scratch_bytes, py::arg("batch"), py::arg("n_samples"));
#ifdef ASDX_WITH_CUDA
  m.def(
      "stereo_view_w1_cuda",
      [](uintptr_t in, int64_t batch, int64_t n_samples, uintptr_t out, uintptr_t scratch, uintptr_t tables,
         const std::vector<int64_t>& offsets, uintptr_t stream) {
        require(n_samples >= stereo_view::kMinSamples, "stereo_view: clips need more than n_fft / 2 = 512 samples");
        const int64_t* o = table_offsets(offsets);
        py::gil_scoped_release release;
        stereo_view_w1_cuda(device<const float>(in), batch, n_samples, device<const unsigned char>(tables), o,
                            device<unsigned char>(scratch), device<float>(out), device<void>(stream));
      },
      py::arg("stereo_ptr"), py::arg("batch"), py::arg("n_samples"), py::arg("out_ptr"), py::arg("scratch_ptr"),
      py::arg("tables_ptr"), py::arg("table_offsets"), py::arg("stream"));
#endif

  // ---- Constant tables of the CUDA frontends: (uint8 blob, offsets), uploaded once per
  // (configuration, device) by asdx._cuda.device_table. Defined in CPU-only builds too.
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
}

}  // namespace asdx::bindings
