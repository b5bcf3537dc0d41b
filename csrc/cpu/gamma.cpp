// CPU gamma kernels: sets are fitted in parallel, contiguous runs of sets per
// thread balanced by their total size (not their count: one huge set among
// many small ones must not leave one thread with most of the work); within a
// set the reducer is a plain loop over its scores (asdx/gamma.h has the math).
// The maximum product of spacings fit, for the sets whose likelihood has no
// interior maximum, is here too: it needs the set sorted, so it is CPU-only.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

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

// ------------------------------------------------------------------ maximum product of spacings

// The spacings fit searches shape up to kMaxSpacingsShape and loc down to kTopGap (max - min)
// below the minimum (the MLE's range; beyond it the gamma is a normal).
constexpr double kMaxSpacingsShape = 1e7;

// Cheng & Amin (1983, J. R. Stat. Soc. B 45:394-403): maximise sum_i ln(F(x_(i)) - F(x_(i-1)))
// over the n + 1 spacings of the sorted scores (F(x_(0)) = 0, F(x_(n+1)) = 1). Every spacing
// is at most 1, so the objective is bounded above and the estimate exists where the
// likelihood is unbounded. A tie group of m equal scores takes the spacing below it m times
// (its zero spacings would make the objective -inf). Parameters theta = (ln shape,
// ln((min - loc) / spread), ln(scale / spread)); loc stays a few ulps below the minimum.
class Spacings {
 public:
  Spacings(const double* x, int64_t n) : sorted_(x, x + n) {
    std::sort(sorted_.begin(), sorted_.end());
    for (const double v : sorted_) {
      if (above_min_.empty() || v != sorted_[0] + above_min_.back()) {
        above_min_.push_back(v - sorted_[0]);
        weight_.push_back(1.0);
      } else {
        weight_.back() += 1.0;
      }
    }
    low_ = sorted_.front();
    spread_ = sorted_.back() - low_;
    smallest_gap_ = 4.0 * (low_ - nextafter(low_, -kInf));
  }

  int64_t distinct() const { return static_cast<int64_t>(above_min_.size()); }
  double low() const { return low_; }
  double spread() const { return spread_; }
  double first_gap() const { return fmax(above_min_.size() > 1 ? above_min_[1] : spread_, smallest_gap_); }

  // -objective; +inf outside the search range or where a spacing underflows to 0.
  double negative(const std::array<double, 3>& theta) const {
    const double a = exp(theta[0]), gap = spread_ * exp(theta[1]), scale = spread_ * exp(theta[2]);
    if (!(a <= kMaxSpacingsShape && gap >= smallest_gap_ && gap <= kTopGap * spread_ && scale > 0.0 &&
          scale < kInf)) {
      return kInf;
    }
    double total = 0.0, p_prev = 0.0, q_prev = 1.0;
    for (size_t i = 0; i <= above_min_.size(); ++i) {
      double p = 1.0, q = 0.0;
      if (i < above_min_.size()) {
        const IncompleteGamma v = incomplete_gamma(a, (above_min_[i] + gap) / scale);
        p = v.p;
        q = v.q;
      }
      // each spacing from the side where both ends are small, so that neither cancels
      const double spacing = p <= 0.5 ? p - p_prev : q_prev - q;
      if (!(spacing > 0.0)) return kInf;
      total += (i < weight_.size() ? weight_[i] : 1.0) * log(spacing);
      p_prev = p;
      q_prev = q;
    }
    return -total;
  }

 private:
  std::vector<double> sorted_;
  std::vector<double> above_min_;  // distinct scores minus the minimum, ascending
  std::vector<double> weight_;     // their multiplicities
  double low_ = 0.0, spread_ = 0.0, smallest_gap_ = 0.0;
};

// Nelder-Mead as scipy.optimize.minimize(method="Nelder-Mead") runs it (initial simplex
// steps of 5 % of each coordinate, 0.00025 for a zero one; reflection 1, expansion 2,
// contraction 1/2, shrink 1/2), until the simplex is within xatol and its values within
// fatol of the best vertex, or max_evaluations.
template <class F>
std::array<double, 3> nelder_mead(const F& f, std::array<double, 3> start, double xatol, double fatol,
                                  int max_evaluations) {
  constexpr int kDim = 3;
  std::array<std::array<double, 3>, kDim + 1> simplex;
  std::array<double, kDim + 1> value;
  simplex[0] = start;
  for (int j = 0; j < kDim; ++j) {
    simplex[j + 1] = start;
    simplex[j + 1][j] = start[j] != 0.0 ? 1.05 * start[j] : 0.00025;
  }
  int evaluations = 0;
  for (int i = 0; i <= kDim; ++i, ++evaluations) value[i] = f(simplex[i]);
  auto order = [&]() {
    std::array<int, kDim + 1> index{0, 1, 2, 3};
    std::stable_sort(index.begin(), index.end(), [&](int a, int b) { return value[a] < value[b]; });
    auto s = simplex;
    auto v = value;
    for (int i = 0; i <= kDim; ++i) {
      simplex[i] = s[index[i]];
      value[i] = v[index[i]];
    }
  };
  auto point = [&](const std::array<double, 3>& centre, double t) {
    std::array<double, 3> out;
    for (int j = 0; j < kDim; ++j) out[j] = centre[j] + t * (simplex[kDim][j] - centre[j]);
    return out;
  };
  order();
  while (evaluations < max_evaluations) {
    double x_spread = 0.0, f_spread = 0.0;
    for (int i = 1; i <= kDim; ++i) {
      for (int j = 0; j < kDim; ++j) x_spread = fmax(x_spread, fabs(simplex[i][j] - simplex[0][j]));
      f_spread = fmax(f_spread, fabs(value[i] - value[0]));
    }
    if (x_spread <= xatol && f_spread <= fatol) break;
    std::array<double, 3> centre{0.0, 0.0, 0.0};
    for (int i = 0; i < kDim; ++i) {
      for (int j = 0; j < kDim; ++j) centre[j] += simplex[i][j] / kDim;
    }
    const auto reflected = point(centre, -1.0);
    const double f_reflected = f(reflected);
    ++evaluations;
    bool shrink = false;
    if (f_reflected < value[0]) {
      const auto expanded = point(centre, -2.0);
      const double f_expanded = f(expanded);
      ++evaluations;
      if (f_expanded < f_reflected) {
        simplex[kDim] = expanded;
        value[kDim] = f_expanded;
      } else {
        simplex[kDim] = reflected;
        value[kDim] = f_reflected;
      }
    } else if (f_reflected < value[kDim - 1]) {
      simplex[kDim] = reflected;
      value[kDim] = f_reflected;
    } else if (f_reflected < value[kDim]) {  // outside contraction
      const auto contracted = point(centre, -0.5);
      const double f_contracted = f(contracted);
      ++evaluations;
      if (f_contracted <= f_reflected) {
        simplex[kDim] = contracted;
        value[kDim] = f_contracted;
      } else {
        shrink = true;
      }
    } else {  // inside contraction
      const auto contracted = point(centre, 0.5);
      const double f_contracted = f(contracted);
      ++evaluations;
      if (f_contracted < value[kDim]) {
        simplex[kDim] = contracted;
        value[kDim] = f_contracted;
      } else {
        shrink = true;
      }
    }
    if (shrink) {
      for (int i = 1; i <= kDim; ++i) {
        for (int j = 0; j < kDim; ++j) simplex[i][j] = simplex[0][j] + 0.5 * (simplex[i][j] - simplex[0][j]);
        value[i] = f(simplex[i]);
        ++evaluations;
      }
    }
    order();
  }
  return simplex[0];
}

// The spacings fit of one set (the set is fittable: finite, >= 3 scores, not constant);
// kNoInterior with fewer than 3 distinct scores. Nelder-Mead starts from the fixed-location
// MLE with loc one spacing below the minimum and is restarted once from its end (a simplex
// can collapse early); loglik is the likelihood at the estimate.
Fit fit_spacings(SerialReducer& reducer, const double* x, int64_t n) {
  const Spacings spacings(x, n);
  if (spacings.distinct() < 3) return failed_fit(kNoInterior);
  const double spread = spacings.spread(), first_gap = spacings.first_gap();
  const Fit start = fit_fixed_loc(reducer, spacings.low() - first_gap);
  double start_shape = start.shape, start_scale = start.scale;
  if (!(start.status == kOk && start_shape > 0.0 && start_scale > 0.0 && start_shape <= kMaxSpacingsShape)) {
    start_shape = 1.0;
    start_scale = spread;
  }
  std::array<double, 3> theta{log(start_shape), log(first_gap / spread), log(start_scale / spread)};
  const auto objective = [&](const std::array<double, 3>& t) { return spacings.negative(t); };
  for (int round = 0; round < 2; ++round) theta = nelder_mead(objective, theta, 1e-8, 1e-10, 4000);
  if (!is_finite(objective(theta))) return failed_fit(kNoInterior);
  const double shape = exp(theta[0]), gap = spread * exp(theta[1]), scale = spread * exp(theta[2]);
  return finish_fit(reducer, static_cast<double>(n), shape, spacings.low() - gap, scale);
}

}  // namespace

void fit_cpu(const double* values, const int64_t* offsets, int64_t n_sets, bool fixed_loc, double loc, int32_t mode,
             int64_t min_mle_scores, const FitOutputs& out) {
  cpu::parallel_for_weighted(offsets, n_sets, kSetOverhead, kMinScoresPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const double* x = values + offsets[s];
      const int64_t n = offsets[s + 1] - offsets[s];
      SerialReducer reducer(x, n);
      Fit fit = fixed_loc ? fit_fixed_loc(reducer, loc) : fit_free_loc(reducer);
      int8_t method = fit.status == kOk ? kMethodMle : kMethodNone;
      const bool fittable = fit.status == kOk || fit.status == kNoInterior;
      const bool spacings = !fixed_loc && fittable &&
                            (mode == kModeMps || (mode == kModeAuto && (fit.status == kNoInterior || n < min_mle_scores)));
      if (spacings) {
        fit = fit_spacings(reducer, x, n);
        method = fit.status == kOk ? kMethodMps : kMethodNone;
      }
      out.shape[s] = fit.shape;
      out.loc[s] = fit.loc;
      out.scale[s] = fit.scale;
      out.loglik[s] = fit.loglik;
      out.status[s] = fit.status;
      out.method[s] = method;
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
