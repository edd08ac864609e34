// Vectorisable elementary functions shared by the native kernels (no -ffast-math: the
// renderer's NaN checks must keep working, so libm's exp would not vectorise).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// exp for power <= 0: Cephes' expf polynomial (~1 ulp), written so that gcc vectorises it.
inline float fexp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 0.0f ? 0.0f : x;   // power is <= 0 up to rounding; keeps 2^n in range. NaN passes.
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double fexp(double x) { return std::exp(x); }

// The logistic function through exp(-|x|) <= 1, which keeps fexp in its range.
template <typename S>
inline S fsigmoid(S x) {
  const S e = fexp(-std::abs(x));
  const S r = S(1) / (S(1) + e);
  return x >= S(0) ? r : e * r;
}
