// Per-token scaling around the INT8 linear maps (models/infer/quantize.py), fused: FBGEMM's
// (FbgemmInt8Linear: scale_rows, unscale_rows_) and oneDNN's (OneDnnInt8Linear: quantize_rows,
// dequantize_rows).
//
// Eagerly the scaling is five to eight tensor ops per call (abs, amax, reciprocal or division,
// multiply, round, cast on the way in; cast, multiplies and bias add on the way out), each a pass
// over memory and a trip through the dispatcher. Here each side is one pass per row. The arithmetic is the eager one, operation for
// operation (built with -ffp-contract=off, so no multiply-add is fused), so results are equal bit
// for bit and the answers of an INT8 sub-network do not depend on whether this built.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

namespace {

constexpr int64_t kRowsPerTask = 16;

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D (rows, features), got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == torch::kFloat, name, " must be float32");
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

// rows (m, k) -> (rows / max|row|, max|row| as (m, 1)); a zero row's max is clamped to 1e-12, and
// a row with a NaN gets a NaN max (and NaN outputs), as the eager ops give.
std::tuple<torch::Tensor, torch::Tensor> scale_rows(const torch::Tensor& rows) {
  check_rows(rows, "rows");
  const int64_t m = rows.size(0), k = rows.size(1);
  auto scaled = torch::empty_like(rows);
  auto amax = torch::empty({m, 1}, rows.options());
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
torch::Tensor unscale_rows_(torch::Tensor y, const torch::Tensor& amax, const torch::Tensor& bias) {
  check_rows(y, "y");
  const int64_t m = y.size(0), n = y.size(1);
  TORCH_CHECK(amax.numel() == m && amax.is_contiguous() && amax.scalar_type() == torch::kFloat,
              "amax must be ", m, " contiguous float32 values");
  TORCH_CHECK(bias.numel() == n && bias.is_contiguous() && bias.scalar_type() == torch::kFloat,
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

DYNAQA_CLONES void dequantize_row(const int32_t* row, int64_t n, float token, const float* columns,
                                  const float* offsets, float* target) {
  for (int64_t j = 0; j < n; ++j) {
    const float scaled = static_cast<float>(row[j]) * token;
    const float product = scaled * columns[j];
    target[j] = product + offsets[j];
  }
}

// rows (m, k) float -> (round(row * (127 / max|row|)) as int8, max|row| as (m, 1)): oneDNN's
// per-token quantisation, rounding half to even as torch.round does. A row holding an Inf or NaN
// gets zeros and a non-finite max, which spoils its own outputs and no other row's.
std::tuple<torch::Tensor, torch::Tensor> quantize_rows(const torch::Tensor& rows) {
  check_rows(rows, "rows");
  const int64_t m = rows.size(0), k = rows.size(1);
  auto quantized = torch::empty({m, k}, rows.options().dtype(torch::kChar));
  auto amax = torch::empty({m, 1}, rows.options());
  const float* in = rows.data_ptr<float>();
  int8_t* out = quantized.data_ptr<int8_t>();
  float* maxes = amax.data_ptr<float>();
  at::parallel_for(0, m, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      maxes[i] = row_peak(in + i * k, k);
      if (std::isfinite(maxes[i])) {
        // As the eager `127 / amax` computes it: the reciprocal, then times 127 (two roundings).
        quantize_row(in + i * k, k, (1.0f / maxes[i]) * 127.0f, out + i * k);
      } else {
        std::fill(out + i * k, out + (i + 1) * k, int8_t{0});  // an Inf or NaN token: its output is NaN anyway
      }
    }
  });
  return {quantized, amax};
}

// acc (m, n) int32 -> float: acc * (amax[i] * (1 / 127)) * scale[j] + bias[j], in that order.
torch::Tensor dequantize_rows(const torch::Tensor& acc, const torch::Tensor& amax, const torch::Tensor& scale,
                              const torch::Tensor& bias) {
  TORCH_CHECK(acc.dim() == 2 && acc.scalar_type() == torch::kInt && acc.is_contiguous(),
              "acc must be 2-D contiguous int32");
  const int64_t m = acc.size(0), n = acc.size(1);
  TORCH_CHECK(amax.numel() == m && amax.is_contiguous() && amax.scalar_type() == torch::kFloat,
              "amax must be ", m, " contiguous float32 values");
  for (const auto* t : {&scale, &bias}) {
    TORCH_CHECK(t->numel() == n && t->is_contiguous() && t->scalar_type() == torch::kFloat,
                "scale and bias must be ", n, " contiguous float32 values");
  }
  auto y = torch::empty({m, n}, amax.options());
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scale_rows", &scale_rows, "rows / max|row| and the maxes (m, 1)");
  m.def("unscale_rows_", &unscale_rows_, "y * amax + bias, in place");
  m.def("quantize_rows", &quantize_rows, "round(rows * 127 / max|row|) as int8, and the maxes (m, 1)");
  m.def("dequantize_rows", &dequantize_rows, "acc * amax / 127 * scale + bias, as float32");
}
