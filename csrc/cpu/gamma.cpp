// CPU gamma kernels: sets are fitted in parallel, contiguous runs of sets per
// thread balanced by their total size (not their count: one huge set among
// many small ones must not leave one thread with most of the work); within a
// set the reducer is a plain loop over its scores (asdx/gamma.h has the math).
#include <algorithm>

#include "asdx/gamma.h"
#include "asdx/gamma_kernels.h"
#include "parallel.h"

namespace asdx::gamma {
namespace {

// A fit makes a few passes over its scores plus a scalar iteration (digamma,
// trigamma, ...) whose cost does not depend on the set's size: a set weighs
// its length plus kSetOverhead scores' worth. A fit of ~1000 scores takes
// ~0.1 ms; a thread gets at least kMinScoresPerThread of weight.
constexpr int64_t kSetOverhead = 64;
constexpr int64_t kMinScoresPerThread = 1024;
constexpr int64_t kMinElementsPerThread = 256;

class SerialReducer {
 public:
  SerialReducer(const double* x, int64_t n) : x_(x), n_(n) {}

  SetStats stats() const {
    SetStats st{n_, 0, kInf, -kInf, 0.0};
    for (int64_t i = 0; i < n_; ++i) {
      const double v = x_[i];
      if (!is_finite(v)) {
        ++st.non_finite;
        continue;
      }
      st.min = std::min(st.min, v);
      st.max = std::max(st.max, v);
      st.sum += v;
    }
    return st;
  }

  Moments moments(double xbar) const {
    Moments m{0.0, 0.0};
    for (int64_t i = 0; i < n_; ++i) {
      const double d = x_[i] - xbar;
      m.m2 += d * d;
      m.m3 += d * d * d;
    }
    return m;
  }

  LocSums loc_sums(double xbar, double base, double gap, double inv_ybar) const {
    LocSums s{0.0, 0.0, 0.0};
    for (int64_t i = 0; i < n_; ++i) {
      double c, k, e;
      loc_terms(x_[i], xbar, base, gap, inv_ybar, c, k, e);
      s.c += c;
      s.k += k;
      s.e += e;
    }
    return s;
  }

  double loglik(const LoglikForm& form) const {
    double total = 0.0;
    for (int64_t i = 0; i < n_; ++i) total += loglik_term(form, x_[i]);
    return total;
  }

 private:
  const double* x_;
  int64_t n_;
};

}  // namespace

void fit_cpu(const double* values, const int64_t* offsets, int64_t n_sets, bool fixed_loc, double loc,
             const FitOutputs& out) {
  cpu::parallel_for_weighted(offsets, n_sets, kSetOverhead, kMinScoresPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      SerialReducer reducer(values + offsets[s], offsets[s + 1] - offsets[s]);
      const Fit fit = fixed_loc ? fit_fixed_loc(reducer, loc) : fit_free_loc(reducer);
      out.shape[s] = fit.shape;
      out.loc[s] = fit.loc;
      out.scale[s] = fit.scale;
      out.loglik[s] = fit.loglik;
      out.status[s] = fit.status;
    }
  });
}

void ppf_cpu(const double* q, const double* shape, const double* loc, const double* scale, int64_t n, double* out) {
  cpu::parallel_for(n, kMinElementsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = ppf(q[i], shape[i], loc[i], scale[i]);
  });
}

void special_cpu(Special function, const double* a, const double* x, const double* loc, const double* scale, int64_t n,
                 double* out) {
  cpu::parallel_for(n, kMinElementsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      switch (function) {
        case Special::kDigamma: out[i] = digamma(a[i]); break;
        case Special::kTrigamma: out[i] = trigamma(a[i]); break;
        case Special::kGammainc: out[i] = gammainc(a[i], x[i]); break;
        case Special::kGammaincc: out[i] = gammaincc(a[i], x[i]); break;
        case Special::kGammaincinv: out[i] = gammaincinv(a[i], x[i]); break;
        case Special::kGammainccinv: out[i] = gammainccinv(a[i], x[i]); break;
        case Special::kLogPdf: out[i] = log_pdf(x[i], a[i], loc[i], scale[i]); break;
      }
    }
  });
}

}  // namespace asdx::gamma
