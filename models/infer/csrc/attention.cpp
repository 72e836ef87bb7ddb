#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DYNAQA_AVX512 1
#endif

namespace dynaqa {
namespace {

// Attention for inference. torch's fused CPU kernel spends 350 us a layer on 128 tokens of 12
// heads of 32 (a quarter of the INT8 full model's time). Here each task takes one head and a block
// of kRows queries, keeps their scores in a buffer the size of L1, and writes the context straight
// into (batch, queries, heads, head size), the layout the output map reads. AVX-512 only (written
// with its intrinsics, compiled for it alone and called only where the CPU has it), head sizes 32
// and 64; elsewhere the caller runs torch's kernel.
constexpr int64_t kRows = 8;
constexpr int64_t kLanes = 16;

#ifdef DYNAQA_AVX512

// e^w for a vector of w <= 0, as exp_nonpositive: 0 below -87, else 2^k times a Taylor polynomial.
__attribute__((target("avx512f"))) inline __m512 exp_nonpositive16(__m512 w) {
  const __mmask16 vanishes = _mm512_cmp_ps_mask(w, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  w = _mm512_max_ps(_mm512_set1_ps(-87.0f), w);  // this operand order lets a NaN through
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(w, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), w);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.42860682e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  for (const float c : {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(static_cast<__mmask16>(~vanishes), p, _mm512_castsi512_ps(bits));
}

// One head's block of up to kRows queries: scores against every key (keys_t is the head's keys
// transposed, (D, padded), zero past `keys`), softmax, then the probabilities times the values.
// Keys past `keys` score -inf and weigh exactly 0, and every sum runs over fixed lanes in key
// order, so a query's context is the same however far its batch was padded.
template <int64_t D>
__attribute__((target("avx512f"))) void attend_block(const float* q, int64_t q_stride, int64_t rows,
                                                     const float* keys_t, const float* v, int64_t v_stride,
                                                     int64_t keys, int64_t padded, float scale, const float* bias,
                                                     float* scores, float* out, int64_t out_stride) {
  const float* row_q[kRows];
  for (int64_t r = 0; r < kRows; ++r) row_q[r] = q + std::min(r, rows - 1) * q_stride;  // spare rows repeat the last
  for (int64_t j = 0; j < padded; j += kLanes) {
    __m512 acc[kRows];
    for (int64_t r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t c = 0; c < D; ++c) {
      const __m512 kc = _mm512_loadu_ps(keys_t + c * padded + j);
      for (int64_t r = 0; r < kRows; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(row_q[r][c]), kc, acc[r]);
    }
    const __mmask16 real = keys - j >= kLanes ? __mmask16(0xffff) : __mmask16((1u << (keys - j)) - 1);
    const __m512 offset = bias != nullptr ? _mm512_maskz_loadu_ps(real, bias + j) : _mm512_setzero_ps();
    const __m512 masked = _mm512_mask_blend_ps(real, _mm512_set1_ps(-INFINITY), offset);
    for (int64_t r = 0; r < kRows; ++r) {
      _mm512_storeu_ps(scores + r * padded + j, _mm512_fmadd_ps(acc[r], _mm512_set1_ps(scale), masked));
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* row = scores + r * padded;
    __m512 peak = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < padded; j += kLanes) peak = _mm512_max_ps(peak, _mm512_loadu_ps(row + j));
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(peak));
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0; j < padded; j += kLanes) {
      const __m512 e = exp_nonpositive16(_mm512_sub_ps(_mm512_loadu_ps(row + j), top));
      _mm512_storeu_ps(row + j, e);
      total = _mm512_add_ps(total, e);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
    for (int64_t j = 0; j < padded; j += kLanes) _mm512_storeu_ps(row + j, _mm512_mul_ps(_mm512_loadu_ps(row + j), inverse));
  }
  constexpr int64_t kParts = D / kLanes;
  __m512 ctx[kRows][kParts];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t part = 0; part < kParts; ++part) ctx[r][part] = _mm512_setzero_ps();
  }
  for (int64_t j = 0; j < keys; ++j) {
    __m512 vj[kParts];
    for (int64_t part = 0; part < kParts; ++part) vj[part] = _mm512_loadu_ps(v + j * v_stride + part * kLanes);
    for (int64_t r = 0; r < kRows; ++r) {
      const __m512 p = _mm512_set1_ps(scores[r * padded + j]);
      for (int64_t part = 0; part < kParts; ++part) ctx[r][part] = _mm512_fmadd_ps(p, vj[part], ctx[r][part]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t part = 0; part < kParts; ++part) _mm512_storeu_ps(out + r * out_stride + part * kLanes, ctx[r][part]);
  }
}

#endif  // DYNAQA_AVX512

}  // namespace

bool fast_attention(int64_t head_size) {
#ifdef DYNAQA_AVX512
  return (head_size == 32 || head_size == 64) && __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

// q (batch, heads, queries, d), k and v (batch, heads, keys, d), each with a unit stride in d;
// bias (batch, keys) additive, or empty. Returns the context as (batch, queries, heads, d).
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                     double scale) {
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->dim() == 4 && t->scalar_type() == at::kFloat && t->stride(3) == 1,
                "q, k and v must be 4-D float32 with unit stride in the last dimension");
  }
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), d = q.size(3), keys = k.size(2);
  TORCH_CHECK(fast_attention(d), "no fast attention for head size ", d, " on this CPU");
  TORCH_CHECK(q.is_cpu() && k.is_cpu() && v.is_cpu() && bias.is_cpu(), "q, k, v and bias must be on the CPU");
  TORCH_CHECK(k.size(0) == batch && v.size(0) == batch && k.size(1) == heads && v.size(1) == heads &&
                  v.size(2) == keys && k.size(3) == d && v.size(3) == d && keys > 0,
              "q, k and v disagree in shape");
  const bool biased = bias.numel() > 0;
  TORCH_CHECK(!biased || (bias.dim() == 2 && bias.size(0) == batch && bias.size(1) == keys && bias.is_contiguous() &&
                          bias.scalar_type() == at::kFloat),
              "bias must be (batch, keys) contiguous float32, or empty");
#ifdef DYNAQA_AVX512
  const int64_t padded = (keys + kLanes - 1) / kLanes * kLanes;
  auto keys_t = at::zeros({batch, heads, d, padded}, q.options());
  keys_t.narrow(3, 0, keys).copy_(k.transpose(2, 3));
  auto out = at::empty({batch, queries, heads, d}, q.options());
  const int64_t blocks = (queries + kRows - 1) / kRows;
  const float* qp = q.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* kt = keys_t.data_ptr<float>();
  const float* bp = biased ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const auto block = d == 32 ? &attend_block<32> : &attend_block<64>;
  at::parallel_for(0, batch * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(kRows * padded);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (heads * blocks), h = task / blocks % heads, first = task % blocks * kRows;
      block(qp + b * q.stride(0) + h * q.stride(1) + first * q.stride(2), q.stride(2), std::min(kRows, queries - first),
            kt + (b * heads + h) * d * padded, vp + b * v.stride(0) + h * v.stride(1), v.stride(2), keys, padded,
            static_cast<float>(scale), biased ? bp + b * keys : nullptr, scores.data(),
            op + ((b * queries + first) * heads + h) * d, heads * d);
    }
  });
  return out;
#else
  return at::Tensor();  // unreachable: fast_attention said no
#endif
}

}  // namespace dynaqa
