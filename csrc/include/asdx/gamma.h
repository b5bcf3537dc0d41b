// Gamma-distribution math shared by the CPU and CUDA kernels: special
// functions (digamma, trigamma, the regularised incomplete gamma and its
// inverse), the log-pdf and quantile, and the maximum-likelihood fit of one
// score set (asdx.scoring.gamma documents the behaviour; the official DCASE
// baseline, nttcslab/dcase2023_task2_baseline_ae, fits scipy.stats.gamma with all three parameters free).
//
// The fit is written against a "reducer" that sums per-score terms over the
// set: a plain loop on the CPU, a block-wide reduction on CUDA, where every
// thread of the block runs the same scalar iteration on the broadcast sums.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "asdx/common.h"

// The fit templates call the reducer's methods, which are __device__-only in the
// CUDA reducer; they are instantiated for it from device code only.
#if defined(__CUDACC__)
#define ASDX_REDUCER_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define ASDX_REDUCER_TEMPLATE
#endif

namespace asdx::gamma {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kMaxDouble = std::numeric_limits<double>::max();
constexpr double kEps = std::numeric_limits<double>::epsilon();
constexpr double kHalfLog2Pi = 0.91893853320467274178;  // ln(sqrt(2 pi))
constexpr double kSqrt2Pi = 2.50662827463100050242;
constexpr double kSqrtHalf = 0.70710678118654752440;

// Per-set status of the batched fit (asdx.scoring.gamma.STATUS names them).
enum Status : int32_t {
  kOk = 0,
  kTooFew = 1,     // fewer than kMinScores scores
  kConstant = 2,   // all scores equal: no spread to fit
  kNonFinite = 3,  // a NaN or an infinity among the scores
  kBelowLoc = 4,   // loc fixed and some score <= loc: outside the support
  kNoInterior = 5, // loc free and the likelihood has no interior maximum (rises to the boundary)
};
constexpr int64_t kMinScores = 3;

// Which estimate a set got (asdx.scoring.gamma.METHODS), and which the caller asks for
// (FIT_METHODS): kModeAuto = the interior MLE from min_mle_scores scores on, else the
// maximum product of spacings (csrc/cpu/gamma.cpp; host only: it sorts the set).
enum Method : int8_t { kMethodNone = 0, kMethodMle = 1, kMethodMps = 2 };
enum FitMode : int32_t { kModeAuto = 0, kModeMle = 1, kModeMps = 2 };

ASDX_HD bool is_finite(double x) { return fabs(x) <= kMaxDouble; }

// ------------------------------------------------------------------ building blocks

// log1p(u) - u without cancellation for small |u| (u > -1).
// Uses ln(1+u) = 2 atanh(t), t = u / (2 + u), so log1p(u) - u = -t u + 2 (t^3/3 + t^5/5 + ...).
ASDX_HD double log1pmx(double u) {
  if (fabs(u) >= 0.25) return log1p(u) - u;
  const double t = u / (2.0 + u);
  const double t2 = t * t;
  double power = t * t2;
  double tail = 0.0;
  for (int k = 3; k < 60; k += 2) {
    const double term = power / k;
    tail += term;
    if (fabs(term) <= 1e-17 * fabs(tail)) break;
    power *= t2;
  }
  return -t * u + 2.0 * tail;
}

// lgamma(a) - [(a - 1/2) ln a - a + ln sqrt(2 pi)], the Stirling-series remainder.
ASDX_HD double stirling_remainder(double a) {
  if (a < 10.0) return lgamma(a) - ((a - 0.5) * log(a) - a + kHalfLog2Pi);
  const double r = 1.0 / (a * a);
  return (1.0 / 12.0 -
          r * (1.0 / 360.0 - r * (1.0 / 1260.0 - r * (1.0 / 1680.0 - r * (1.0 / 1188.0 -
               r * (691.0 / 360360.0 - r / 156.0)))))) / a;
}

// digamma psi(x) for x > 0 (NaN for x <= 0 or NaN; +inf at +inf).
// Recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10, then the asymptotic series
// ln x - 1/(2x) - sum B_2k / (2k x^2k) (DLMF 5.11.2).
ASDX_HD double digamma(double x) {
  if (!(x > 0.0)) return kNaN;
  if (x == kInf) return kInf;
  double shift = 0.0;
  while (x < 10.0) {
    shift -= 1.0 / x;
    x += 1.0;
  }
  const double r = 1.0 / (x * x);
  const double tail = r * (1.0 / 12.0 - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r * (1.0 / 240.0 -
                      r * (1.0 / 132.0 - r * (691.0 / 32760.0 - r / 12.0))))));
  return shift + log(x) - 0.5 / x - tail;
}

// trigamma psi_1(x) for x > 0 (NaN for x <= 0 or NaN; 0 at +inf).
// psi_1(x) = psi_1(x + 1) + 1/x^2, then 1/x + 1/(2x^2) + sum B_2k / x^(2k+1) (DLMF 5.15.8).
ASDX_HD double trigamma(double x) {
  if (!(x > 0.0)) return kNaN;
  if (x == kInf) return 0.0;
  double shift = 0.0;
  while (x < 10.0) {
    shift += 1.0 / (x * x);
    x += 1.0;
  }
  const double r = 1.0 / (x * x);
  const double tail = r * (1.0 / 6.0 - r * (1.0 / 30.0 - r * (1.0 / 42.0 - r * (1.0 / 30.0 -
                      r * (5.0 / 66.0 - r * (691.0 / 2730.0 - r * 7.0 / 6.0)))))) / x;
  return shift + 1.0 / x + 0.5 * r + tail;
}

// g(a) = ln a - psi(a), the left side of the shape equation; > 0, decreasing.
// Written so that it keeps full relative precision for huge a (g ~ 1/(2a)).
ASDX_HD double log_minus_digamma(double a) {
  double shift = 0.0;
  double start = a;
  while (a < 10.0) {
    shift += 1.0 / a;
    a += 1.0;
  }
  const double r = 1.0 / (a * a);
  const double series = 0.5 / a + r * (1.0 / 12.0 - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r * (1.0 / 240.0 -
                        r * (1.0 / 132.0 - r * (691.0 / 32760.0 - r / 12.0))))));
  // ln(start) - ln(a) + [ln a - psi(a)] + sum 1/(start + j)
  return (start == a ? 0.0 : log(start / a)) + series + shift;
}

// g'(a) = 1/a - psi_1(a) < 0, again without cancellation for huge a.
ASDX_HD double log_minus_digamma_derivative(double a) {
  double shift = 0.0;
  const double start = a;
  while (a < 10.0) {
    shift += 1.0 / (a * a);
    a += 1.0;
  }
  const double r = 1.0 / (a * a);
  const double series = -r * (0.5 + (1.0 / 6.0 - r * (1.0 / 30.0 - r * (1.0 / 42.0 - r * (1.0 / 30.0 -
                        r * (5.0 / 66.0 - r * (691.0 / 2730.0 - r * 7.0 / 6.0)))))) / a);
  return (1.0 / start - 1.0 / a) + series - shift;
}

// x^a e^{-x} / Gamma(a), the factor in front of the series and continued fraction;
// for a >= 10 via Stirling so that the exponent does not cancel catastrophically.
ASDX_HD double incomplete_gamma_prefactor(double a, double x) {
  if (a < 10.0) return exp(a * log(x) - x - lgamma(a));
  return exp(a * log1pmx((x - a) / a) - stirling_remainder(a)) * sqrt(a) / kSqrt2Pi;
}

struct IncompleteGamma {
  double p;  // P(a, x)
  double q;  // Q(a, x) = 1 - P(a, x)
};

// Above this shape the uniform asymptotic expansion replaces series / continued fraction.
constexpr double kTemmeShape = 1e5;

// Temme's uniform expansion (DLMF 8.12.3-8.12.8), two correction terms:
// Q = erfc(eta sqrt(a/2)) / 2 + exp(-a eta^2 / 2) / sqrt(2 pi a) (c0(eta) + c1(eta) / a).
// The Taylor coefficients of c0 and c1 at eta = 0 were derived with sympy from the
// closed forms (asdx's own derivation, see tests/test_gamma.py for the check).
ASDX_HD IncompleteGamma incomplete_gamma_temme(double a, double x) {
  const double lambda_minus_1 = (x - a) / a;
  const double phi = -log1pmx(lambda_minus_1);  // lambda - 1 - ln(lambda) >= 0
  const double eta = (lambda_minus_1 < 0.0 ? -1.0 : 1.0) * sqrt(2.0 * (phi > 0.0 ? phi : 0.0));
  double c0, c1;
  if (fabs(eta) < 0.5) {
    const double e = eta;
    c0 = -1.0 / 3.0 + e * (1.0 / 12.0 + e * (-2.0 / 135.0 + e * (1.0 / 864.0 + e * (1.0 / 2835.0 +
         e * (-139.0 / 777600.0 + e * (1.0 / 25515.0 + e * (-571.0 / 261273600.0 +
         e * (-281.0 / 151559100.0 + e * (163879.0 / 197522841600.0 + e * (-5221.0 / 29554024500.0 +
         e * (5246819.0 / 782190452736000.0 + e * (5459.0 / 531972441000.0))))))))))));
  } else {
    c0 = 1.0 / lambda_minus_1 - 1.0 / eta;
  }
  if (fabs(eta) < 1.0) {
    const double e = eta;
    c1 = -1.0 / 540.0 + e * (-1.0 / 288.0 + e * (1.0 / 378.0 + e * (-77.0 / 77760.0 + e * (1.0 / 4860.0 +
         e * (-1.0 / 2488320.0 + e * (-2743.0 / 151559100.0 + e * (41969.0 / 5486745600.0 +
         e * (-11.0 / 6823440.0 + e * (47207.0 / 10158317568000.0 + e * (3761.0 / 27280638000.0 +
         e * (-3599669.0 / 62575236218880.0)))))))))));
  } else {
    const double m = lambda_minus_1;
    c1 = 1.0 / (eta * eta * eta) - 1.0 / (m * m * m) - 1.0 / (m * m) - 1.0 / (12.0 * m);
  }
  const double remainder = exp(-a * phi) / (kSqrt2Pi * sqrt(a)) * (c0 + c1 / a);
  const double arg = eta * sqrt(0.5 * a);
  return {0.5 * erfc(-arg) - remainder, 0.5 * erfc(arg) + remainder};
}

// P(a, x) and Q(a, x) for a > 0, x >= 0 (callers check the domain).
// Series for x < a + 1 (DLMF 8.7.1 form), Legendre's continued fraction for Q otherwise
// (DLMF 8.9.2, modified Lentz), the uniform expansion for a > kTemmeShape.
ASDX_HD IncompleteGamma incomplete_gamma(double a, double x) {
  if (x <= 0.0) return {0.0, 1.0};
  if (x == kInf) return {1.0, 0.0};
  if (a > kTemmeShape) return incomplete_gamma_temme(a, x);
  const double front = incomplete_gamma_prefactor(a, x);
  const int max_terms = 1000 + static_cast<int>(40.0 * sqrt(a));
  if (x < a + 1.0) {
    double term = 1.0 / a;
    double sum = term;
    for (int k = 1; k < max_terms; ++k) {
      term *= x / (a + k);
      sum += term;
      if (term <= sum * 1e-17) break;
    }
    const double p = front * sum;
    return {p, 1.0 - p};
  }
  constexpr double kTiny = 1e-300;
  double b = x + 1.0 - a;
  double c = 1.0 / kTiny;
  double d = 1.0 / b;
  double h = d;
  for (int i = 1; i < max_terms; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (fabs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (fabs(delta - 1.0) <= 1e-16) break;
  }
  const double q = front * h;
  return {1.0 - q, q};
}

ASDX_HD double gammainc(double a, double x) {
  if (!(a > 0.0) || !(x >= 0.0) || a == kInf) return kNaN;
  return incomplete_gamma(a, x).p;
}

ASDX_HD double gammaincc(double a, double x) {
  if (!(a > 0.0) || !(x >= 0.0) || a == kInf) return kNaN;
  return incomplete_gamma(a, x).q;
}

// Standard normal quantile to ~5e-4 (Abramowitz & Stegun 26.2.23): a starting point only.
ASDX_HD double normal_quantile_rough(double p) {
  const double tail = p < 0.5 ? p : 1.0 - p;
  const double t = sqrt(-2.0 * log(tail));
  const double z = t - (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)));
  return p < 0.5 ? -z : z;
}

// x with P(a, x) = p, given p and q = 1 - p separately so that an upper-tail q
// keeps its precision. Newton in w = ln x on ln P (or ln Q, whichever target is
// smaller), with a bracket that falls back to bisection in ln x.
ASDX_HD double incomplete_gamma_inverse(double a, double p, double q) {
  if (!(a > 0.0) || a == kInf || !(p >= 0.0) || !(q >= 0.0) || !(p <= 1.0) || !(q <= 1.0)) return kNaN;
  if (p == 0.0) return 0.0;
  if (q == 0.0) return kInf;
  const bool lower = p <= q;
  const double target = lower ? p : q;
  // Starting point.
  double x;
  const double small_x = exp((log(p) + lgamma(a + 1.0)) / a);  // P ~ x^a / Gamma(a + 1) for small x
  if (a >= 1.0) {
    const double z = lower ? normal_quantile_rough(p) : -normal_quantile_rough(q);
    const double base = 1.0 - 1.0 / (9.0 * a) + z / (3.0 * sqrt(a));  // Wilson-Hilferty
    x = base > 0.05 ? a * base * base * base : small_x;
  } else if (lower || small_x < 1.0) {
    x = small_x;
  } else {
    x = 1.0;  // Q ~ x^(a-1) e^-x / Gamma(a) for large x: two fixed-point steps
    for (int i = 0; i < 2; ++i) x = fmax(1.0, -log(q) - lgamma(a) + (a - 1.0) * log(x));
  }
  if (!(x > 0.0) || !is_finite(x)) x = a;
  const double log_target = log(target);
  double lo = 0.0, hi = kInf;
  for (int iter = 0; iter < 200; ++iter) {
    const IncompleteGamma v = incomplete_gamma(a, x);
    const double value = lower ? v.p : v.q;
    // f(w) = ln value - ln target is increasing in w for P, decreasing for Q: orient it increasing.
    const double f = lower ? log(value) - log_target : log_target - log(value);
    if (f == 0.0) return x;
    if (f < 0.0) lo = x; else hi = x;
    const double slope = incomplete_gamma_prefactor(a, x) / value;  // |d ln value / d ln x|
    double step = -f / slope;
    if (!is_finite(step)) step = f < 0.0 ? 30.0 : -30.0;
    step = fmax(-30.0, fmin(30.0, step));
    double next = x * exp(step);
    // Quadratic convergence: after a Newton step below 1e-10 in ln x the error is ~1e-20.
    if (fabs(step) <= 1e-10) return next;
    if (!(next > lo && next < hi)) {
      if (hi == kInf) next = x * 16.0;
      else if (lo == 0.0) next = hi / 16.0;
      else next = sqrt(lo) * sqrt(hi);
    }
    if (hi - lo <= 4.0 * kEps * x) return next;
    x = next;
  }
  return x;
}

ASDX_HD double gammaincinv(double a, double p) { return incomplete_gamma_inverse(a, p, 1.0 - p); }

ASDX_HD double gammainccinv(double a, double q) { return incomplete_gamma_inverse(a, 1.0 - q, q); }

// ------------------------------------------------------------------ distribution

// Below this shape the plain log-pdf loses < ~1e-11 to cancellation (a ln z ~ 1e5 at
// most) and is much cheaper than the Stirling arrangement.
constexpr double kStirlingShape = 1e4;

// log pdf of Gamma(shape a, loc, scale) at x; -inf outside the support, NaN for invalid parameters.
ASDX_HD double log_pdf(double x, double a, double loc, double scale) {
  if (!(a > 0.0) || !(scale > 0.0) || !is_finite(a) || !is_finite(scale) || !is_finite(loc) || x != x) return kNaN;
  const double z = (x - loc) / scale;
  if (z < 0.0 || z == kInf) return -kInf;
  if (z == 0.0) return a == 1.0 ? -log(scale) : (a < 1.0 ? kInf : -kInf);
  if (a < kStirlingShape) return (a - 1.0) * log(z) - z - lgamma(a) - log(scale);
  // Same quantity, arranged so that a ln z and lgamma(a) do not cancel for large a.
  return a * log1pmx((z - a) / a) + 0.5 * log(a) - kHalfLog2Pi - stirling_remainder(a) - log(z) - log(scale);
}

// Quantile loc + scale * P^{-1}(a, q); NaN for invalid parameters or q outside [0, 1].
ASDX_HD double ppf(double q, double a, double loc, double scale) {
  if (!(a > 0.0) || !(scale > 0.0) || !is_finite(a) || !is_finite(scale) || !is_finite(loc)) return kNaN;
  const double x = incomplete_gamma_inverse(a, q, 1.0 - q);
  if (x != x) return kNaN;
  return loc + scale * x;
}

// ------------------------------------------------------------------ maximum likelihood

struct Fit {
  double shape;
  double loc;
  double scale;
  double loglik;
  int32_t status;
};

ASDX_HD Fit failed_fit(int32_t status) { return {kNaN, kNaN, kNaN, kNaN, status}; }

// One pass over the set: count, non-finite count, min, max, sum of the finite scores.
struct SetStats {
  int64_t n;
  int64_t non_finite;
  double min;
  double max;
  double sum;
};

// Central moments sum((x - xbar)^2), sum((x - xbar)^3): the method-of-moments start.
struct Moments {
  double m2;
  double m3;
};

// Sums at one location, in terms of y_i = (x_i - base) + gap > 0, ybar = mean(y) and
// d_i = (x_i - xbar) / ybar = y_i / ybar - 1 (so mean(d) = 0):
//   c = sum(d - ln(1 + d))            -> n (ln ybar - mean ln y), the shape equation's right side
//   k = sum(d^2 / (1 + d))            -> n (ybar mean(1/y) - 1)
//   e = sum(d^2 (3 + 2d) / (1 + d)^2) -> n (ybar^2 mean(1/y^2) - 1) + 2 sum(d)
// Written in d so that nothing cancels when the gap is huge (a -> infinity).
struct LocSums {
  double c;
  double k;
  double e;
};

// The per-score terms of LocSums; inv_ybar = 1 / ybar.
ASDX_HD void loc_terms(double x, double xbar, double base, double gap, double inv_ybar, double& c, double& k,
                       double& e) {
  const double y = (x - base) + gap;
  const double d = (x - xbar) * inv_ybar;
  const double w = y * inv_ybar;  // 1 + d, exact even when y << ybar
  const double inv_w = 1.0 / w;
  const double d2 = d * d;
  // log(w) is faster than log1p(d) and loses only ~eps / d^2 of d - ln(1 + d) for |d| >= 0.01.
  c = d - (fabs(d) < 0.01 ? log1p(d) : log(w));
  k = d2 * inv_w;
  e = d2 * (3.0 + 2.0 * d) * inv_w * inv_w;
}

// Log-likelihood of Gamma(a, loc, scale) split as sum_i term(x_i) + n * constant, so
// the per-score work is one log: for a < kStirlingShape, term = (a - 1) ln z - z and constant =
// -lgamma(a) - ln scale; above, the Stirling arrangement of log_pdf.
struct LoglikForm {
  double a;
  double loc;
  double inv_scale;
  double constant;
  bool stirling;
};

ASDX_HD LoglikForm loglik_form(double a, double loc, double scale) {
  if (a < kStirlingShape) return {a, loc, 1.0 / scale, -lgamma(a) - log(scale), false};
  return {a, loc, 1.0 / scale, 0.5 * log(a) - kHalfLog2Pi - stirling_remainder(a) - log(scale), true};
}

// One score's term; -inf outside the support (and at z = 0 unless a == 1).
ASDX_HD double loglik_term(const LoglikForm& f, double x) {
  const double z = (x - f.loc) * f.inv_scale;
  if (!(z > 0.0)) {
    if (z == 0.0 && f.a <= 1.0) return f.a == 1.0 ? 0.0 : kInf;
    return -kInf;
  }
  if (!f.stirling) return (f.a - 1.0) * log(z) - z;
  return f.a * log1pmx((z - f.a) / f.a) - log(z);
}

// Solves ln a - psi(a) = c (c > 0) for the shape: Choi-Wette / Minka start
// (within ~1.5%), then Newton in ln a (g is convex and decreasing in ln a).
ASDX_HD double solve_shape(double c) {
  const double root = sqrt((c - 3.0) * (c - 3.0) + 24.0 * c);
  double a = 2.0 / (root + c - 3.0);
  if (!(a > 0.0) || !is_finite(a)) a = c > 1.0 ? 1.0 / c : 0.5 / c;
  for (int iter = 0; iter < 60; ++iter) {
    const double f = log_minus_digamma(a) - c;
    const double slope = a * log_minus_digamma_derivative(a);  // d g / d ln a < 0
    double step = -f / slope;
    step = fmax(-5.0, fmin(5.0, step));
    a *= exp(step);
    // Newton converges quadratically: after a step below 1e-9 the error is ~1e-18.
    if (fabs(step) <= 1e-9) break;
  }
  return a;
}

// Profile log-likelihood per score at the MLE (a, scale = ybar / a) for this location:
// l / n = -ln ybar - (a - 1) c + ln a / 2 - ln sqrt(2 pi) - stirling_remainder(a).
ASDX_HD double profile_loglik_per_score(double a, double c_mean, double ybar) {
  return -log(ybar) - (a - 1.0) * c_mean + 0.5 * log(a) - kHalfLog2Pi - stirling_remainder(a);
}

// One point of the free-location profile, at gap G = min(x) - loc, u = ln G.
struct ProfilePoint {
  double u;
  double gap;
  double shape;
  double ybar;
  double loglik;  // profile log-likelihood (n times the per-score value)
  double slope;   // d loglik / du
  double curve;   // d^2 loglik / du^2
};

ASDX_REDUCER_TEMPLATE
template <class Reducer>
ASDX_HD ProfilePoint profile_point(Reducer& reducer, double n, double xbar, double xmin, double gap) {
  ProfilePoint pt;
  pt.u = log(gap);
  pt.gap = gap;
  pt.ybar = (xbar - xmin) + gap;
  const LocSums s = reducer.loc_sums(xbar, xmin, gap, 1.0 / pt.ybar);
  const double c = s.c / n, k = s.k / n, e = s.e / n;
  const double a = c > 0.0 ? solve_shape(c) : kInf;
  pt.shape = a;
  pt.loglik = n * profile_loglik_per_score(a, c, pt.ybar);
  // Envelope theorem: dl/dloc = n/ybar (1 - (a - 1) k); da/dloc = (k / ybar) / g'(a).
  const double dl_dloc = n / pt.ybar * (1.0 - (a - 1.0) * k);
  const double d2l_dloc2 = n / (pt.ybar * pt.ybar) * (-k * k / log_minus_digamma_derivative(a) + 1.0 - (a - 1.0) * e);
  // loc = xmin - exp(u): dloc/du = -G.
  pt.slope = -gap * dl_dloc;
  pt.curve = -gap * dl_dloc + gap * gap * d2l_dloc2;
  return pt;
}

// Free-location search range, as gap / (max - min). Above the top the gamma is a
// normal to ~1e-9 and the profile is flat; a walk that ends at the bottom has found no
// interior maximum (the profile still rises towards the boundary spike there).
constexpr double kTopGap = 1e4;
constexpr double kBottomGap = 1e-6;
// The walk's largest step in u = ln(gap) before the maximum is bracketed (a factor 1.65 in
// gap): small enough not to jump over the shallow local maxima that scipy's Nelder-Mead,
// taking small steps from the same start, finds (some sets have several, a factor 2-3 in
// gap apart; steps of 2 decades jumped over them). On 750 sets the walk ends where the
// reference's dense grid search does (python/asdx/reference/gamma.py) with steps of 0.25,
// 0.5 or 1; 0.5 costs 7.3 profile evaluations per set of benchmarks/_scoring_gamma.py.
constexpr double kStep = 0.5;

// Walks uphill on the profile from `start` within [u_bottom, u_top] and returns the best
// point seen: safeguarded Newton once the slope has changed sign (bisection when Newton
// leaves the bracket), Newton or plain steps of at most kStep uphill before that. It
// stops at a stationary point, or at an end of the range that the profile still rises towards.
ASDX_REDUCER_TEMPLATE
template <class Reducer>
ASDX_HD ProfilePoint walk_uphill(Reducer& reducer, double n, double xbar, double xmin, double u_bottom, double u_top,
                                 ProfilePoint pt) {
  double ulo = u_bottom, uhi = u_top;
  bool lo_known = false, hi_known = false;
  ProfilePoint best = pt;
  for (int iter = 0; iter < 300; ++iter) {
    if (pt.slope > 0.0) {
      ulo = pt.u;
      lo_known = true;
    } else {
      uhi = pt.u;
      hi_known = true;
    }
    if (pt.slope > 0.0 && pt.u >= u_top) break;
    if (pt.slope <= 0.0 && pt.u <= u_bottom) break;
    const double uphill = pt.slope > 0.0 ? 1.0 : -1.0;
    const double newton = pt.curve < 0.0 ? -pt.slope / pt.curve : 0.0;
    const bool bracketed = lo_known && hi_known;
    double next;
    if (newton * uphill > 0.0) {
      next = pt.u + (bracketed ? newton : uphill * fmin(fabs(newton), kStep));
    } else {
      next = pt.u + uphill * kStep;
    }
    if (bracketed) {
      if (!(next > ulo && next < uhi)) next = 0.5 * (ulo + uhi);
    } else {
      next = fmax(u_bottom, fmin(u_top, next));
    }
    // Near the maximum Newton converges quadratically; a remaining step below 1e-8 in
    // ln(gap) changes the log-likelihood by ~1e-16 * |curve| and the parameters by ~1e-8.
    if (fabs(next - pt.u) <= 1e-8 * fmax(1.0, fabs(pt.u))) break;
    pt = profile_point(reducer, n, xbar, xmin, exp(next));
    if (pt.loglik > best.loglik) best = pt;
  }
  return best;
}

// Statuses common to both fits; kOk means the set can be fitted.
ASDX_HD int32_t check_set(const SetStats& st) {
  if (st.non_finite > 0) return kNonFinite;
  if (st.n < kMinScores) return kTooFew;
  return kOk;
}

ASDX_REDUCER_TEMPLATE
template <class Reducer>
ASDX_HD Fit finish_fit(Reducer& reducer, double n, double a, double loc, double scale) {
  const LoglikForm form = loglik_form(a, loc, scale);
  return {a, loc, scale, reducer.loglik(form) + n * form.constant, kOk};
}

// MLE with the location fixed: y = x - loc > 0, ln a - psi(a) = ln ybar - mean ln y, scale = ybar / a.
ASDX_REDUCER_TEMPLATE
template <class Reducer>
ASDX_HD Fit fit_fixed_loc(Reducer& reducer, double loc) {
  const SetStats st = reducer.stats();
  const int32_t status = check_set(st);
  if (status != kOk) return failed_fit(status);
  if (!(st.min > loc)) return failed_fit(kBelowLoc);
  if (st.min == st.max) return failed_fit(kConstant);
  const double n = static_cast<double>(st.n);
  const double xbar = st.sum / n;
  const double ybar = xbar - loc;
  const LocSums s = reducer.loc_sums(xbar, loc, 0.0, 1.0 / ybar);
  const double c = s.c / n;
  if (!(c > 0.0)) return failed_fit(kConstant);
  const double a = solve_shape(c);
  return finish_fit(reducer, n, a, loc, ybar / a);
}

// MLE with all three parameters free (what scipy.stats.gamma.fit(x) maximises): the
// interior local maximum of the likelihood, reached as scipy reaches it, uphill from the
// method-of-moments start (shape 4 / skewness^2). For each location the (shape, scale)
// MLE is the fixed-location solution, so the walk is on the profile log-likelihood over
// u = ln(min(x) - loc), between a gap of kBottomGap and kTopGap times (max - min).
//
// The likelihood is unbounded as loc -> min(x) once the shape drops below 1 (Smith 1985,
// Biometrika 72:67-90): that boundary "maximum" is a spike, not a fit, and is never
// returned. The profile's slope is n/ybar (1 - (a - 1) mean(ybar/y - 1)) in loc, so every
// stationary point has shape > 1; where the shape is below 1 the profile rises towards
// the boundary. When the walk from the start ends at the bottom of the range, a second
// walk starts from the first point above the start where the profile rises again; when
// that fails too, the status is kNoInterior (parameters NaN) and the caller falls back to
// the spacings fit (csrc/cpu/gamma.cpp). At the top of the range the profile is that of a normal
// (skewness 2 / sqrt(shape) ~ 0), the limit of symmetric or left-skewed sets.
ASDX_REDUCER_TEMPLATE
template <class Reducer>
ASDX_HD Fit fit_free_loc(Reducer& reducer) {
  const SetStats st = reducer.stats();
  const int32_t status = check_set(st);
  if (status != kOk) return failed_fit(status);
  if (st.min == st.max) return failed_fit(kConstant);
  const double n = static_cast<double>(st.n);
  const double xbar = st.sum / n;
  const double spread = st.max - st.min;
  // The smallest gap that still moves loc below min(x) by a few ulps.
  const double resolvable_gap = 4.0 * (st.min - nextafter(st.min, -kInf));
  const double u_top = log(kTopGap * spread);
  const double u_bottom = fmin(u_top, fmax(log(kBottomGap * spread), log(resolvable_gap)));

  // Method of moments: shape 4 / g1^2, loc = xbar - sqrt(shape) * sd.
  const Moments mom = reducer.moments(xbar);
  double u_start = u_top;
  if (mom.m3 > 0.0) {
    const double variance = mom.m2 / n;
    const double skew = (mom.m3 / n) / (variance * sqrt(variance));
    const double gap = 2.0 / skew * sqrt(variance) - (xbar - st.min);
    u_start = gap > 0.0 ? fmax(u_bottom, fmin(u_top, log(gap))) : u_bottom;
  }
  const ProfilePoint start = profile_point(reducer, n, xbar, st.min, exp(u_start));
  // exp/log round trips move u by an ulp or two: "at the bottom" allows for that.
  const double bottom_tolerance = 1e-8 * fmax(1.0, fabs(u_bottom));
  ProfilePoint found = walk_uphill(reducer, n, xbar, st.min, u_bottom, u_top, start);
  if (found.u <= u_bottom + bottom_tolerance && start.slope <= 0.0) {
    // The start lay in the boundary's basin: look above it for a rising stretch.
    for (double u = start.u + kStep; u < u_top + 0.5 * kStep; u += kStep) {
      const ProfilePoint pt = profile_point(reducer, n, xbar, st.min, exp(fmin(u, u_top)));
      if (pt.slope > 0.0) {
        found = walk_uphill(reducer, n, xbar, st.min, u_bottom, u_top, pt);
        break;
      }
    }
  }
  if (found.u <= u_bottom + bottom_tolerance) return failed_fit(kNoInterior);
  if (!(found.shape > 0.0) || !is_finite(found.shape)) return failed_fit(kConstant);
  return finish_fit(reducer, n, found.shape, st.min - found.gap, found.ybar / found.shape);
}

}  // namespace asdx::gamma
