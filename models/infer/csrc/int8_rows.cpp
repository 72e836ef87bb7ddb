// Per-token scaling around FBGEMM's INT8 linear map (models/quantize.py, FbgemmInt8Linear), fused.
//
// Eagerly the scaling is five tensor ops per call (abs, amax, reciprocal, multiply on the way in;
// multiply and bias add on the way out), each a pass over memory and a trip through the
// dispatcher. Here each side is one pass per row. The arithmetic is the eager one, operation for
// operation (built with -ffp-contract=off, so no multiply-add is fused), so results are equal bit
// for bit and the answers of an INT8 sub-network do not depend on whether this built.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <tuple>

namespace {

constexpr int64_t kRowsPerTask = 16;

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, name, " must be 2-D (rows, features), got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == torch::kFloat, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
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
      const float* row = in + i * k;
      float peak = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        const float magnitude = std::fabs(row[j]);
        if (magnitude > peak || std::isnan(magnitude)) peak = magnitude;  // NaN carries, as amax's does
      }
      peak = std::max(peak, 1e-12f);  // a NaN peak stays NaN, as clamp_min's does
      maxes[i] = peak;
      const float inverse = 1.0f / peak;
      float* target = out + i * k;
      for (int64_t j = 0; j < k; ++j) target[j] = row[j] * inverse;
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
      float* row = out + i * n;
      const float peak = maxes[i];
      for (int64_t j = 0; j < n; ++j) {
        const float product = row[j] * peak;
        row[j] = product + offsets[j];
      }
    }
  });
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scale_rows", &scale_rows, "rows / max|row| and the maxes (m, 1)");
  m.def("unscale_rows_", &unscale_rows_, "y * amax + bias, in place");
}
