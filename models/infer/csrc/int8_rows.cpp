// Per-token scaling around the INT8 linear maps (models/infer/quantize.py), fused: FBGEMM's
// (FbgemmInt8Linear: scale_rows, unscale_rows_) and oneDNN's (OneDnnInt8Linear: quantize_rows,
// dequantize_rows).
//
// Eagerly the scaling is five to eight tensor ops per call (abs, amax, reciprocal or division,
// multiply, round, cast on the way in; cast, multiplies and bias add on the way out), each a pass
// over memory and a trip through the dispatcher. Here each side is one pass per row. The arithmetic is the eager one, operation for
// operation (built with -ffp-contract=off, so no multiply-add is fused), so results are equal bit
// for bit and the answers of an INT8 sub-network do not depend on whether this built.
#include "kernels.h"
#include "fast_math.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

namespace dynaqa {
namespace {

constexpr int64_t kRowsPerTask = 16;

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D (rows, features), got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Hot loops, compiled for AVX-512, AVX2 and plain x86-64 alike and picked when
// the library loads (GCC's target_clones): one image runs on any x86 CPU, and the wide ones get
// vectors as wide as the eager torch kernels these replace.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DYNAQA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DYNAQA_CLONES
#endif

// max |x| of a row over the bit patterns of |x|: ordered as the floats are, and a reduction the
// compiler vectorises (a float max is not, without -ffast-math); a NaN, the largest pattern, carries.
DYNAQA_CLONES float row_peak(const float* row, int64_t k) {
  uint32_t peak = 0;
  for (int64_t j = 0; j < k; ++j) {
    uint32_t bits;
    std::memcpy(&bits, row + j, sizeof bits);
    const uint32_t magnitude = bits & 0x7fffffffu;
    peak = magnitude > peak ? magnitude : peak;
  }
  float value;
  std::memcpy(&value, &peak, sizeof value);
  return std::isnan(value) ? value : std::max(value, 1e-12f);
}

// Round half to even by the float trick: adding and subtracting 1.5 * 2^23 leaves the nearest
// integer (|x| <= 127 here), under the default rounding mode, as torch.round's nearbyint does.
// Through an int32 chunk because GCC 12 vectorises float -> int32 and int32 -> int8 but not the
// two in one loop. The caller sends only finite rows, so every cast is defined.
DYNAQA_CLONES void quantize_row(const float* row, int64_t k, float scale, int8_t* target) {
  constexpr int64_t kChunk = 64;
  const float magic = 12582912.0f;
  int32_t whole[kChunk];
  for (int64_t start = 0; start < k; start += kChunk) {
    const int64_t n = std::min(kChunk, k - start);
    for (int64_t j = 0; j < n; ++j) whole[j] = static_cast<int32_t>((row[start + j] * scale + magic) - magic);
    for (int64_t j = 0; j < n; ++j) target[start + j] = static_cast<int8_t>(whole[j]);
  }
}

DYNAQA_CLONES void scale_row(const float* row, int64_t k, float inverse, float* target) {
  for (int64_t j = 0; j < k; ++j) target[j] = row[j] * inverse;
}

DYNAQA_CLONES void unscale_row(float* row, int64_t n, float peak, const float* offsets) {
  for (int64_t j = 0; j < n; ++j) {
    const float product = row[j] * peak;
    row[j] = product + offsets[j];
  }
}

DYNAQA_CLONES void dequantize_row(const int32_t* row, int64_t n, float token, const float* columns,
                                  const float* offsets, float* target) {
  for (int64_t j = 0; j < n; ++j) {
    const float scaled = static_cast<float>(row[j]) * token;
    const float product = scaled * columns[j];
    target[j] = product + offsets[j];
  }
}

// One token: its max |x| into *peak, and round(x * (127 / max|x|)) as int8 into target. A row
// holding an Inf or NaN gets zeros and a non-finite max, which spoils its own outputs only.
void quantize_peak_row(const float* row, int64_t k, float* peak, int8_t* target) {
  *peak = row_peak(row, k);
  if (std::isfinite(*peak)) {
    // As the eager `127 / amax` computes it: the reciprocal, then times 127 (two roundings).
    quantize_row(row, k, (1.0f / *peak) * 127.0f, target);
  } else {
    std::fill(target, target + k, int8_t{0});  // an Inf or NaN token: its output is NaN anyway
  }
}

// The int32 products of a map (m, n) with the per-token maxes (m, 1) of its input and its per-row
// weight scales and bias (n each).
void check_products(const at::Tensor& acc, const at::Tensor& amax, const at::Tensor& scale,
                    const at::Tensor& bias) {
  TORCH_CHECK(acc.dim() == 2 && acc.scalar_type() == at::kInt && acc.is_contiguous(),
              "acc must be 2-D contiguous int32");
  const int64_t m = acc.size(0), n = acc.size(1);
  TORCH_CHECK(amax.numel() == m && amax.is_contiguous() && amax.scalar_type() == at::kFloat,
              "amax must be ", m, " contiguous float32 values");
  for (const auto* t : {&scale, &bias}) {
    TORCH_CHECK(t->numel() == n && t->is_contiguous() && t->scalar_type() == at::kFloat,
                "scale and bias must be ", n, " contiguous float32 values");
  }
}

// GELU's exact (erf) form, x / 2 (1 + erf(x / sqrt 2)), with erf from Abramowitz and Stegun's
// 7.1.26 (absolute error under 1.5e-7, as torch's vectorised erf): well below the INT8 step that
// follows it.
inline __attribute__((always_inline)) float gelu(float x) {
  const float z = x * 0.70710678f;
  const float a = z < 0.0f ? -z : z;
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float poly = 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  const float tail = poly * t * exp_nonpositive(-(a * a));  // 1 - erf(|z|)
  const float one_plus_erf = z < 0.0f ? tail : 2.0f - tail;
  return 0.5f * x * one_plus_erf;
}

DYNAQA_CLONES void dequantize_gelu_row(const int32_t* row, int64_t n, float token, const float* columns,
                                       const float* offsets, float* target) {
  for (int64_t j = 0; j < n; ++j) {
    const float scaled = static_cast<float>(row[j]) * token;
    const float product = scaled * columns[j];
    target[j] = gelu(product + offsets[j]);
  }
}

}  // namespace

// rows (m, k) -> (rows / max|row|, max|row| as (m, 1)); a zero row's max is clamped to 1e-12, and
// a row with a NaN gets a NaN max (and NaN outputs), as the eager ops give.
std::tuple<at::Tensor, at::Tensor> scale_rows(const at::Tensor& rows) {
  check_rows(rows, "rows");
  const int64_t m = rows.size(0), k = rows.size(1);
  auto scaled = at::empty_like(rows);
  auto amax = at::empty({m, 1}, rows.options());
  const float* in = rows.data_ptr<float>();
  float* out = scaled.data_ptr<float>();
  float* maxes = amax.data_ptr<float>();
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      maxes[i] = row_peak(in + i * k, k);
      scale_row(in + i * k, k, 1.0f / maxes[i], out + i * k);
    }
  });
  return {scaled, amax};
}

// In place: y[i, j] = y[i, j] * amax[i] + bias[j].
at::Tensor unscale_rows_(at::Tensor y, const at::Tensor& amax, const at::Tensor& bias) {
  check_rows(y, "y");
  const int64_t m = y.size(0), n = y.size(1);
  TORCH_CHECK(amax.numel() == m && amax.is_contiguous() && amax.scalar_type() == at::kFloat,
              "amax must be ", m, " contiguous float32 values");
  TORCH_CHECK(bias.numel() == n && bias.is_contiguous() && bias.scalar_type() == at::kFloat,
              "bias must be ", n, " contiguous float32 values");
  float* out = y.data_ptr<float>();
  const float* maxes = amax.data_ptr<float>();
  const float* offsets = bias.data_ptr<float>();
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      unscale_row(out + i * n, n, maxes[i], offsets);
    }
  });
  return y;
}

// rows (m, k) float -> (round(row * (127 / max|row|)) as int8, max|row| as (m, 1)): oneDNN's
// per-token quantisation, rounding half to even as torch.round does. A row holding an Inf or NaN
// gets zeros and a non-finite max, which spoils its own outputs and no other row's.
std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& rows) {
  check_rows(rows, "rows");
  const int64_t m = rows.size(0), k = rows.size(1);
  auto quantized = at::empty({m, k}, rows.options().dtype(at::kChar));
  auto amax = at::empty({m, 1}, rows.options());
  const float* in = rows.data_ptr<float>();
  int8_t* out = quantized.data_ptr<int8_t>();
  float* maxes = amax.data_ptr<float>();
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) quantize_peak_row(in + i * k, k, maxes + i, out + i * k);
  });
  return {quantized, amax};
}

// acc (m, n) int32 -> float: acc * (amax[i] * (1 / 127)) * scale[j] + bias[j], in that order.
at::Tensor dequantize_rows(const at::Tensor& acc, const at::Tensor& amax, const at::Tensor& scale,
                              const at::Tensor& bias) {
  check_products(acc, amax, scale, bias);
  const int64_t m = acc.size(0), n = acc.size(1);
  auto y = at::empty({m, n}, amax.options());
  const int32_t* in = acc.data_ptr<int32_t>();
  float* out = y.data_ptr<float>();
  const float* maxes = amax.data_ptr<float>();
  const float inverse = 1.0f / 127.0f;
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      dequantize_row(in + i * n, n, maxes[i] * inverse, scale.data_ptr<float>(), bias.data_ptr<float>(), out + i * n);
    }
  });
  return y;
}

// The FFN's middle in one pass per row: acc (m, n) int32 products of its first map ->
// GELU(acc * amax[i] / 127 * scale[j] + bias[j]) quantised per token for its second map, and that
// token's max |GELU| (m, 1). The float activations live only in a row buffer.
std::tuple<at::Tensor, at::Tensor> gelu_quantize_rows(const at::Tensor& acc, const at::Tensor& amax,
                                                            const at::Tensor& scale, const at::Tensor& bias) {
  check_products(acc, amax, scale, bias);
  const int64_t m = acc.size(0), n = acc.size(1);
  auto quantized = at::empty({m, n}, acc.options().dtype(at::kChar));
  auto peaks = at::empty({m, 1}, amax.options());
  const int32_t* in = acc.data_ptr<int32_t>();
  int8_t* out = quantized.data_ptr<int8_t>();
  const float* maxes = amax.data_ptr<float>();
  float* inner_maxes = peaks.data_ptr<float>();
  const float inverse = 1.0f / 127.0f;
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> inner(n);
    for (int64_t i = begin; i < end; ++i) {
      dequantize_gelu_row(in + i * n, n, maxes[i] * inverse, scale.data_ptr<float>(), bias.data_ptr<float>(),
                          inner.data());
      quantize_peak_row(inner.data(), n, inner_maxes + i, out + i * n);
    }
  });
  return {quantized, peaks};
}

}  // namespace dynaqa
