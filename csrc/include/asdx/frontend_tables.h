// The constant tables of one CUDA frontend configuration (FFT twiddles, bit
// reversal, analysis window, sparse mel filterbank) packed into one byte blob.
// Python uploads it once per (configuration, device), caches the device copy
// and passes its pointer, so a kernel call copies nothing from the host.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "asdx/fft.h"
#include "asdx/frontend.h"
#include "asdx/mel.h"
#include "asdx/window.h"

namespace asdx::frontend {

enum TableSlot : int { kTwiddleRe = 0, kTwiddleIm, kBitReversal, kWindow, kFirstBin, kBandOffset, kWeight, kTableSlots };

struct TableBlob {
  std::vector<unsigned char> bytes;
  std::array<int64_t, kTableSlots> offsets{};
};

// Typed pointers into a blob (host or device memory).
template <class Real>
struct TableView {
  const Real* twiddle_re;
  const Real* twiddle_im;
  const int* bit_reversal;
  const Real* window;
  const int* first_bin;
  const int* band_offset;
  const float* weight;
};

template <class Real>
TableView<Real> view_tables(const unsigned char* base, const int64_t* offsets) {
  return TableView<Real>{reinterpret_cast<const Real*>(base + offsets[kTwiddleRe]),
                         reinterpret_cast<const Real*>(base + offsets[kTwiddleIm]),
                         reinterpret_cast<const int*>(base + offsets[kBitReversal]),
                         reinterpret_cast<const Real*>(base + offsets[kWindow]),
                         reinterpret_cast<const int*>(base + offsets[kFirstBin]),
                         reinterpret_cast<const int*>(base + offsets[kBandOffset]),
                         reinterpret_cast<const float*>(base + offsets[kWeight])};
}

namespace detail {

template <class Out, class In>
void append(TableBlob& blob, TableSlot slot, const std::vector<In>& values) {
  const size_t offset = (blob.bytes.size() + 15) / 16 * 16;  // 16-byte aligned slots
  blob.bytes.resize(offset + values.size() * sizeof(Out));
  Out* target = reinterpret_cast<Out*>(blob.bytes.data() + offset);
  for (size_t i = 0; i < values.size(); ++i) target[i] = static_cast<Out>(values[i]);
  blob.offsets[slot] = static_cast<int64_t>(offset);
}

template <class Real>
TableBlob pack(int n_fft, const std::vector<double>& window, const mel::SparseFilterbank& bank) {
  const fft::Tables fft_tables = fft::make_tables(n_fft);
  TableBlob blob;
  append<Real>(blob, kTwiddleRe, fft_tables.twiddle_re);
  append<Real>(blob, kTwiddleIm, fft_tables.twiddle_im);
  append<int>(blob, kBitReversal, fft_tables.bit_reversal);
  append<Real>(blob, kWindow, window);
  append<int>(blob, kFirstBin, bank.first_bin);
  append<int>(blob, kBandOffset, bank.offset);
  append<float>(blob, kWeight, bank.weight);
  blob.bytes.resize((blob.bytes.size() + 15) / 16 * 16 + 16);
  return blob;
}

}  // namespace detail

// Calls body(Real{}) with Real = float for the float32 FFT path, double otherwise.
template <class Body>
void with_precision(bool float32, Body&& body) {
  if (float32) {
    body(float{});
  } else {
    body(double{});
  }
}

// Tables of logmel_dcase and stereo_features (periodic Hann, Slaney mel bank).
template <class Real>
TableBlob logmel_tables(const LogmelConfig& c) {
  return detail::pack<Real>(c.n_fft, window::periodic_hann(c.n_fft),
                            mel::slaney_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax));
}

// Tables of kaldi_fbank (Povey window, Kaldi mel bank).
template <class Real>
TableBlob kaldi_tables(const KaldiConfig& c) {
  return detail::pack<Real>(c.padded_length, window::povey(c.frame_length),
                            mel::kaldi_filterbank(c.sample_rate, c.padded_length, c.n_mels, c.low_freq, c.high_freq));
}

}  // namespace asdx::frontend
