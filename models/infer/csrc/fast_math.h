// Elementary functions the fused kernels share, written so GCC vectorises the loops that call them.
#pragma once

#include <cstdint>
#include <cstring>

namespace dynaqa {

// e^w for w in [-87, 0] (exp(-z^2) below): w = k ln2 + r with |r| <= ln2 / 2, e^r by its Taylor
// series to r^7 (relative error under 1e-8 there), times 2^k built in the exponent bits.
inline __attribute__((always_inline)) float exp_nonpositive(float w) {
  // e^-87 is near the smallest normal float: call it 0, as -inf is; a NaN too, so no cast below
  // sees one (the caller's NaN reaches its result through its other factors).
  const bool vanishes = !(w >= -87.0f);
  w = vanishes ? -87.0f : w;
  const float magic = 12582912.0f;
  const float k = (w * 1.44269504f + magic) - magic;  // round(w / ln 2)
  const float r = (w - k * 0.693145751953125f) - k * 1.42860682e-6f;  // ln 2 in two parts
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float power;
  std::memcpy(&power, &bits, sizeof power);
  return vanishes ? 0.0f : p * power;
}

}  // namespace dynaqa
