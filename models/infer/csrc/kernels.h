// The fused kernels inference calls (models/infer/native.py), one source file per kind.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace dynaqa {

// int8_rows.cpp: the per-token scaling around the INT8 linear maps, and the FFN's GELU between two.
std::tuple<at::Tensor, at::Tensor> scale_rows(const at::Tensor& rows);
at::Tensor unscale_rows_(at::Tensor y, const at::Tensor& amax, const at::Tensor& bias);
std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& rows);
at::Tensor dequantize_rows(const at::Tensor& acc, const at::Tensor& amax, const at::Tensor& scale,
                           const at::Tensor& bias);
std::tuple<at::Tensor, at::Tensor> gelu_quantize_rows(const at::Tensor& acc, const at::Tensor& amax,
                                                      const at::Tensor& scale, const at::Tensor& bias);

// attention.cpp: softmax(q k^T * scale + bias) v for inference, where the CPU has AVX-512.
bool fast_attention(int64_t head_size);
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                  const at::Tensor& slots, double scale);
// and Drop-and-Restore's ranking: the attention each key receives from some queries.
at::Tensor received(const at::Tensor& q, const at::Tensor& k, const at::Tensor& bias, const at::Tensor& counts,
                    double scale);

}  // namespace dynaqa
