// Elementwise math that the compiler can vectorise: exp, sigmoid and tanh without libm calls.
//
// libm's expf/tanh are scalar calls; in an RNN step they cost more than the recurrent GEMM.
// These versions are branch-free (selects only), written so that a plain loop over them turns
// into SIMD code, and accurate to a few ulp in both float and double, so fused kernels agree
// with NumPy to rtol 1e-5 (float32) and 1e-12 (float64). NaN propagates; +-inf saturates.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.hpp"

namespace rnnkit {

template <class To, class From>
RNNKIT_INLINE To bit_cast_(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2, exp(r) by its Taylor polynomial
// (degree 13 for double, 7 for float: truncation error below half an ulp on that interval).
// 2^n is built in the exponent bits; n is read off the bits of x/ln2 + 1.5*2^52 so no
// float-to-int conversion is needed (that conversion is undefined for NaN).
RNNKIT_INLINE double exp_(double x_in) {
  // Clamp so 2^n stays a normal number (NaN fails both tests and passes through), then
  // underflow to 0 and overflow to inf as IEEE exp does.
  double x = x_in < -708.0 ? -708.0 : x_in;
  x = x > 709.0 ? 709.0 : x;
  const double shift = 0x1.8p52;
  double kd = x * 1.4426950408889634 + shift;
  const std::uint64_t ki = bit_cast_<std::uint64_t>(kd);
  kd -= shift;
  const double r = (x - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const double scale = bit_cast_<double>((ki + 1023) << 52);
  const double e = p * scale;
  return x_in < -708.0 ? 0.0 : (x_in > 709.0 ? HUGE_VAL : e);
}

RNNKIT_INLINE float exp_(float x_in) {
  float x = x_in < -87.0f ? -87.0f : x_in;
  x = x > 88.0f ? 88.0f : x;
  const float shift = 0x1.8p23f;
  float kf = x * 1.44269504f + shift;
  const std::uint32_t ki = bit_cast_<std::uint32_t>(kf);
  kf -= shift;
  const float r = (x - kf * 0.693145752f) - kf * 1.42860677e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = bit_cast_<float>((ki + 127u) << 23);
  const float e = p * scale;
  return x_in < -87.0f ? 0.0f : (x_in > 88.0f ? HUGE_VALF : e);
}

template <class T>
RNNKIT_INLINE T sigmoid_(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// tanh for |x| < 0.625 by the Cephes rational/polynomial forms (no cancellation near 0),
// otherwise 1 - 2 / (exp(2|x|) + 1) with the sign restored.
RNNKIT_INLINE double tanh_(double x) {
  const double a = x < 0 ? -x : x;
  const double z = x * x;
  const double num =
      (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3;
  const double den =
      ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3;
  const double small = x + x * z * (num / den);
  double large = 1.0 - 2.0 / (exp_(2.0 * a) + 1.0);
  large = x < 0 ? -large : large;
  return a < 0.625 ? small : large;
}

RNNKIT_INLINE float tanh_(float x) {
  const float a = x < 0 ? -x : x;
  const float z = x * x;
  const float poly =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f);
  const float small = x + x * z * poly;
  float large = 1.0f - 2.0f / (exp_(2.0f * a) + 1.0f);
  large = x < 0 ? -large : large;
  return a < 0.625f ? small : large;
}

}  // namespace rnnkit
