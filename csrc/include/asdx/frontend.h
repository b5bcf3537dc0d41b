// Frontend kernel entry points. The CPU and CUDA versions take the same
// configuration and write the same layouts; csrc/bindings/frontend.cpp binds both.
#pragma once

#include <cstdint>

namespace asdx::frontend {

// Official DCASE AE-baseline log-mel (librosa melspectrogram, centred zero-padded frames).
struct LogmelConfig {
  int sample_rate = 16000;
  int n_fft = 1024;
  int hop = 512;
  int n_mels = 128;
  double fmin = 0.0;
  double fmax = 8000.0;
};

// Kaldi-compatible fbank as BEATs uses it (torchaudio.compliance.kaldi.fbank defaults).
struct KaldiConfig {
  int sample_rate = 16000;
  int frame_length = 400;
  int frame_shift = 160;
  int padded_length = 512;
  int n_mels = 128;
  double low_freq = 20.0;
  double high_freq = 0.0;  // <= 0 means Nyquist + high_freq, as in Kaldi
  double preemphasis = 0.97;
  bool beats_normalise = false;
};

// The P_proto spatial frontend.
struct StereoConfig {
  LogmelConfig mel;
  int max_lag = 320;
};

constexpr int kStereoBandChannels = 7;  // near, far, ild, ipd_cos, ipd_sin, mid, side

inline int64_t logmel_frames(const LogmelConfig& c, int64_t n_samples) { return 1 + n_samples / c.hop; }

inline int64_t kaldi_frames(const KaldiConfig& c, int64_t n_samples) {
  return n_samples < c.frame_length ? 0 : 1 + (n_samples - c.frame_length) / c.frame_shift;
}

// signals: (n_signals, n_samples); out: (n_signals, frames, n_mels). float32 runs
// the FFT in float instead of double (see asdx/fft.h for the accuracy).
void logmel_dcase_cpu(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config,
                      bool float32, float* out);
void kaldi_fbank_cpu(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config,
                     bool float32, float* out);
// stereo: (batch, 2, n_samples); bands: (batch, 7, frames, n_mels); ipd: (batch, 2, frames, n_fft/2+1);
// gcc: (batch, frames, 2) holding (peak lag in samples, peak height).
void stereo_features_cpu(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config,
                         bool float32, float* bands, float* ipd, float* gcc);

#ifdef ASDX_WITH_CUDA
// Device pointers; stream is a cudaStream_t. tables is the device copy of the
// configuration's TableBlob (asdx/frontend_tables.h) in the same precision, and
// table_offsets its host-side offsets (kTableSlots entries).
void logmel_dcase_cuda(const float* signals, int64_t n_signals, int64_t n_samples, const LogmelConfig& config,
                       bool float32, const unsigned char* tables, const int64_t* table_offsets, float* out,
                       void* stream);
void kaldi_fbank_cuda(const float* signals, int64_t n_signals, int64_t n_samples, const KaldiConfig& config,
                      bool float32, const unsigned char* tables, const int64_t* table_offsets, float* out,
                      void* stream);
void stereo_features_cuda(const float* stereo, int64_t batch, int64_t n_samples, const StereoConfig& config,
                          bool float32, const unsigned char* tables, const int64_t* table_offsets, float* bands,
                          float* ipd, float* gcc, void* stream);
#endif

}  // namespace asdx::frontend
