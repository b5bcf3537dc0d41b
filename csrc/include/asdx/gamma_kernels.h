// Gamma kernel entry points (fit, quantile, special functions). The CPU and
// CUDA versions share asdx/gamma.h; csrc/bindings/gamma.cpp binds both.
#pragma once

#include <cstdint>

namespace asdx::gamma {

// Score sets are ragged: set s is values[offsets[s], offsets[s + 1]) and
// offsets has n_sets + 1 non-decreasing entries starting at 0. With fixed_loc
// the location is loc for every set; otherwise all three parameters are free.
// Every output has n_sets entries; status holds a gamma::Status per set and
// the parameters are NaN where it is not kOk; method a gamma::Method.
struct FitOutputs {
  double* shape;
  double* loc;
  double* scale;
  double* loglik;
  int32_t* status;
  int8_t* method;
};

// mode (a gamma::FitMode) applies with the location free: kModeAuto fits sets of fewer
// than min_mle_scores scores, and sets whose likelihood has no interior maximum, by the
// maximum product of spacings; kModeMle never does; kModeMps always does.
void fit_cpu(const double* values, const int64_t* offsets, int64_t n_sets, bool fixed_loc, double loc, int32_t mode,
             int64_t min_mle_scores, const FitOutputs& out);

// Element-wise quantile loc + scale * P^{-1}(shape, q) of n equal-length arrays.
void ppf_cpu(const double* q, const double* shape, const double* loc, const double* scale, int64_t n, double* out);

// Element-wise special functions, for the tests and for users.
enum class Special : int { kDigamma = 0, kTrigamma, kGammainc, kGammaincc, kGammaincinv, kGammainccinv, kLogPdf };
// a, x: n values (x unused by digamma and trigamma); for kLogPdf extra holds (loc, scale) arrays.
void special_cpu(Special function, const double* a, const double* x, const double* loc, const double* scale, int64_t n,
                 double* out);

#ifdef ASDX_WITH_CUDA
// Device pointers; stream is a cudaStream_t. One thread block per set; the maximum-likelihood
// fit only (the caller refits the sets that need the spacings fit with fit_cpu).
void fit_cuda(const double* values, const int64_t* offsets, int64_t n_sets, bool fixed_loc, double loc,
              const FitOutputs& out, void* stream);
void ppf_cuda(const double* q, const double* shape, const double* loc, const double* scale, int64_t n, double* out,
              void* stream);
#endif

}  // namespace asdx::gamma
