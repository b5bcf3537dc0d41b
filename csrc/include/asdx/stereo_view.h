// The near/far residual (the "w1" view): near minus what the far channel predicts
// linearly, per frequency bin, over the whole clip. Shared by the CPU loop
// (csrc/cpu/stereo_view.cpp, pocketfft) and the CUDA kernels (csrc/cuda/stereo_view.cu,
// the radix-2 FFT of asdx/fft.h), so the CPU tests run the math the GPU runs.
//
// The published recipe (kasahart/asd-experiments, docs/02-protocol.md), per clip:
// one joint scale so that the larger peak of the two channels is 0.9 (1 when the
// peak is <= 1e-12); STFT with a periodic Hann, n_fft = window = 1024, hop 512,
// centred with reflect padding; per bin H = sum C conj(F) / (sum |F|^2 + 1e-12);
// Y = C - H F; inverse STFT (overlap-add of windowed frames divided by the summed
// squared window, as torch.istft), cut to the clip's length; the scale undone.
// NumPy reference: asdx.reference.stereo_view.w1_residual.
//
// Precision: samples, FFTs and Y are float32, as the recipe; the per-bin sums over
// frames and the overlap-add's sums are float64 (a few adds per bin or sample: free).
#pragma once

#include <cstdint>

#include "asdx/common.h"
#include "asdx/fft.h"

namespace asdx::stereo_view {

constexpr int kNfft = 1024;
constexpr int kHop = 512;
constexpr int kBins = kNfft / 2 + 1;
constexpr float kPeak = 0.9f;
constexpr float kPeakFloor = 1e-12f;
constexpr double kTransferFloor = 1e-12;
// Reflect padding by n_fft / 2 needs more samples than that (as numpy and torch).
constexpr int64_t kMinSamples = kNfft / 2 + 1;

ASDX_HD int64_t frames(int64_t n_samples) { return 1 + n_samples / kHop; }

// The joint factor from the larger peak |x| of the two channels.
ASDX_HD float joint_scale(float peak) { return peak > kPeakFloor ? kPeak / peak : 1.0f; }

// Index of padded position p - n_fft/2 after reflect padding (no edge repeat), for n_samples >= kMinSamples.
ASDX_HD int64_t reflect(int64_t index, int64_t n_samples) {
  if (index < 0) index = -index;
  if (index >= n_samples) index = 2 * (n_samples - 1) - index;
  return index;
}

// Sample i of centred frame t, scaled and windowed.
template <class Real>
ASDX_HD Real frame_sample(const float* signal, int64_t n_samples, int64_t t, int i, float scale, const Real* window) {
  const float x = signal[reflect(t * kHop + i - kNfft / 2, n_samples)] * scale;
  return static_cast<Real>(x) * window[i];
}

// Per-bin sums over the clip's frames: sum C conj(F) and sum |F|^2.
struct BinSums {
  double cross_re = 0.0;
  double cross_im = 0.0;
  double far_power = 0.0;
};

template <class Real>
ASDX_HD void accumulate(const fft::Complex<Real>& c, const fft::Complex<Real>& f, BinSums& s) {
  s.cross_re += static_cast<double>(c.re) * f.re + static_cast<double>(c.im) * f.im;
  s.cross_im += static_cast<double>(c.im) * f.re - static_cast<double>(c.re) * f.im;
  s.far_power += static_cast<double>(f.re) * f.re + static_cast<double>(f.im) * f.im;
}

// H = sum C conj(F) / (sum |F|^2 + 1e-12).
ASDX_HD fft::Complex<float> transfer(const BinSums& s) {
  const double denominator = s.far_power + kTransferFloor;
  return {static_cast<float>(s.cross_re / denominator), static_cast<float>(s.cross_im / denominator)};
}

// Y[k] = C - H F; the imaginary parts of bins 0 and n/2 are dropped, as a real inverse FFT does.
template <class Real>
ASDX_HD fft::Complex<Real> residual(const fft::Complex<Real>& c, const fft::Complex<Real>& f,
                                    const fft::Complex<float>& h, int k) {
  fft::Complex<Real> y{c.re - (h.re * f.re - h.im * f.im), c.im - (h.re * f.im + h.im * f.re)};
  if (k == 0 || k == kNfft / 2) y.im = Real(0);
  return y;
}

// The CUDA inverse: n y[m] = sum_k Y[k] e^{+2 pi i k m / n} = conj(FFT(conj Y))[m], real for a
// Hermitian Y. Input k (0..n-1) of that forward FFT: conj Y[k] for k <= n/2, Y[n - k] above.
template <class Real>
ASDX_HD fft::Complex<Real> inverse_input(const fft::Complex<Real>& y_low, int k) {
  // y_low is Y[k] for k <= n/2 and Y[n - k] above
  return k <= kNfft / 2 ? fft::Complex<Real>{y_low.re, -y_low.im} : y_low;
}

// Output sample i: the windowed frames (unnormalised inverse FFTs, frame t at frames_data + t * stride)
// overlap-added and divided by n and by the summed squared window, then the joint scale undone.
template <class Real>
ASDX_HD float overlap_add(const Real* frames_data, int64_t stride, int64_t n_frames, int64_t i, const Real* window,
                          float scale) {
  const int64_t p = i + kNfft / 2;  // position in the padded signal
  const int64_t first = p >= kNfft ? (p - kNfft) / kHop + 1 : 0;
  const int64_t last = p / kHop < n_frames - 1 ? p / kHop : n_frames - 1;
  double sum = 0.0;
  double norm = 0.0;
  for (int64_t t = first; t <= last; ++t) {
    const int64_t j = p - t * kHop;
    const double w = static_cast<double>(window[j]);
    sum += static_cast<double>(frames_data[t * stride + j]) * w;
    norm += w * w;
  }
  return static_cast<float>(sum / (static_cast<double>(kNfft) * norm) / static_cast<double>(scale));
}

// ---- The CUDA schedule, one block per frame: these run with (threadIdx.x, blockDim.x, __syncthreads)
// on the GPU and with (0, 1, no-op) on the host (asdx._C._stereo_view_w1_radix2_host, for CPU tests).

// Frame t of one clip: near + j far windowed into bit-reversed re/im, one complex FFT, unpacked into
// the near and far spectra C[k], F[k], k = 0..n/2 (fft::unpack_two_real).
template <class Real, class Barrier>
ASDX_HD void analyse_frame(const float* near, const float* far, int64_t n_samples, int64_t t, float scale,
                           const Real* window, const Real* twiddle_re, const Real* twiddle_im,
                           const int* bit_reversal, Real* re, Real* im, fft::Complex<Real>* c, fft::Complex<Real>* f,
                           int first, int stride, const Barrier& barrier) {
  for (int i = first; i < kNfft; i += stride) {
    const int r = bit_reversal[i];
    re[r] = frame_sample(near, n_samples, t, i, scale, window);
    im[r] = frame_sample(far, n_samples, t, i, scale, window);
  }
  barrier();
  fft::forward(re, im, kNfft, twiddle_re, twiddle_im, first, stride, barrier);
  for (int k = first; k < kBins; k += stride) {
    const int mirror = (kNfft - k) & (kNfft - 1);
    fft::unpack_two_real(re[k], im[k], re[mirror], im[mirror], c[k], f[k]);
  }
  barrier();
}

// Frame t's residual Y = C - H F back to time, unnormalised and unwindowed (overlap_add applies both):
// the inverse FFT as a forward FFT of conj Y (inverse_input); the real part is n y.
template <class Real, class Barrier>
ASDX_HD void synthesise_frame(const fft::Complex<Real>* c, const fft::Complex<Real>* f, const fft::Complex<float>* h,
                              const Real* twiddle_re, const Real* twiddle_im, const int* bit_reversal, Real* re,
                              Real* im, Real* out, int first, int stride, const Barrier& barrier) {
  for (int k = first; k < kNfft; k += stride) {
    const int low = k <= kNfft / 2 ? k : kNfft - k;
    const fft::Complex<Real> z = inverse_input(residual(c[low], f[low], h[low], low), k);
    const int r = bit_reversal[k];
    re[r] = z.re;
    im[r] = z.im;
  }
  barrier();
  fft::forward(re, im, kNfft, twiddle_re, twiddle_im, first, stride, barrier);
  for (int m = first; m < kNfft; m += stride) out[m] = re[m];
  barrier();
}

}  // namespace asdx::stereo_view

namespace asdx::frontend {

// Entry points (csrc/cpu/stereo_view.cpp, csrc/cuda/stereo_view.cu). stereo: (batch, 2, n_samples) float32,
// channel 0 near, 1 far, n_samples >= stereo_view::kMinSamples; out: (batch, n_samples) float32.
void stereo_view_w1_cpu(const float* stereo, int64_t batch, int64_t n_samples, float* out);
// The CUDA kernels' schedule (radix-2 FFT, packed analysis, inverse by conjugation) run on the host by one
// thread: test-only, so that CPU-only tests check the arithmetic the GPU runs.
void stereo_view_w1_radix2_host(const float* stereo, int64_t batch, int64_t n_samples, float* out);

// Bytes of device scratch stereo_view_w1_cuda needs (scales, spectra, transfers, time frames).
int64_t stereo_view_scratch_bytes(int64_t batch, int64_t n_samples);
#ifdef ASDX_WITH_CUDA
// Device pointers; tables: the float32 logmel_tables of n_fft 1024 (twiddles, bit reversal, periodic Hann).
void stereo_view_w1_cuda(const float* stereo, int64_t batch, int64_t n_samples, const unsigned char* tables,
                         const int64_t* table_offsets, unsigned char* scratch, float* out, void* stream);
#endif

}  // namespace asdx::frontend
