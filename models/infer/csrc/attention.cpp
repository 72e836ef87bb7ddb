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

// Up to kRows queries of one head (row_q: kRows pointers, spare ones repeating the last) against
// every key (keys_t is the head's keys transposed, (D, padded), zero past `keys`): row r of
// `scores` ends as query r's probabilities for r < rows. Keys past `keys` score -inf and weigh
// exactly 0, and every sum runs over fixed lanes in key order, so a query's probabilities are the
// same however far its batch was padded.
template <int64_t D>
__attribute__((target("avx512f"))) void probabilities_block(const float* const* row_q, int64_t rows,
                                                            const float* keys_t, int64_t keys, int64_t padded,
                                                            float scale, const float* bias, float* scores) {
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
}

// The block's probabilities times the values: row r's context to out + r * out_stride, r < rows.
template <int64_t D>
__attribute__((target("avx512f"))) void mix_block(const float* scores, int64_t rows, const float* v, int64_t v_stride,
                                                  int64_t keys, int64_t padded, float* out, int64_t out_stride) {
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

// The column sums of a block's first `rows` probability rows that `counts` (nullptr: all), added
// to `totals` (padded) in row order. An uncounted row is skipped, not weighted by 0: a NaN in a
// padding query does not spread (the eager sum, a product with the flags, would spread it).
__attribute__((target("avx512f"))) void add_columns(const float* scores, int64_t rows, const bool* counts,
                                                    int64_t padded, float* totals) {
  for (int64_t r = 0; r < rows; ++r) {
    if (counts != nullptr && !counts[r]) continue;
    for (int64_t j = 0; j < padded; j += kLanes) {
      _mm512_storeu_ps(totals + j, _mm512_add_ps(_mm512_loadu_ps(totals + j), _mm512_loadu_ps(scores + r * padded + j)));
    }
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

namespace {

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& bias) {
  for (const auto* t : {&q, &k}) {
    TORCH_CHECK(t->dim() == 4 && t->scalar_type() == at::kFloat && t->stride(3) == 1 && t->is_cpu(),
                "q and k must be 4-D float32 on the CPU with unit stride in the last dimension");
  }
  TORCH_CHECK(fast_attention(q.size(3)), "no fast attention for head size ", q.size(3), " on this CPU");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3) && k.size(2) > 0,
              "q and k disagree in shape");
  TORCH_CHECK(bias.numel() == 0 || (bias.dim() == 2 && bias.size(0) == q.size(0) && bias.size(1) == k.size(2) &&
                                    bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.is_cpu()),
              "bias must be (batch, keys) contiguous float32 on the CPU, or empty");
}

// A per-query argument: (batch, n) of `type` on the CPU, contiguous; or absent, passed as a 1-D
// empty tensor. Returns whether it was given (a (batch, 0) one was: it picks no query).
bool per_query(const at::Tensor& t, int64_t batch, at::ScalarType type, const char* name) {
  if (t.dim() == 1 && t.numel() == 0) return false;
  TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && t.is_contiguous() && t.is_cpu() && t.scalar_type() == type,
              name, " must be (batch, n) contiguous ", type, " on the CPU, or a 1-D empty tensor for none");
  return true;
}

#ifdef DYNAQA_AVX512
constexpr int64_t padded_keys(int64_t keys) { return (keys + kLanes - 1) / kLanes * kLanes; }

// Head (b, h)'s keys transposed into keys_t (d, padded), zero past the last key, so a score block
// reads a contiguous row of keys per element of the head. Each task transposes the head it works
// on (once per run of tasks on that head): a whole-tensor transposing copy ran on one thread.
void transpose_keys(const at::Tensor& k, int64_t b, int64_t h, int64_t padded, float* keys_t) {
  const int64_t keys = k.size(2), d = k.size(3), stride = k.stride(2);
  const float* head = k.data_ptr<float>() + b * k.stride(0) + h * k.stride(1);
  for (int64_t j = 0; j < keys; ++j) {
    for (int64_t c = 0; c < d; ++c) keys_t[c * padded + j] = head[j * stride + c];
  }
  for (int64_t c = 0; c < d; ++c) std::fill(keys_t + c * padded + keys, keys_t + (c + 1) * padded, 0.0f);
}

// Pointers to the block's queries (from `first`, `rows` of them) of head h in example b: row
// index i of q, or slots[i] where slots is given; spare pointers repeat the last row.
void block_rows(const at::Tensor& q, int64_t b, int64_t h, const int64_t* slots, int64_t first, int64_t rows,
                const float** row_q) {
  const float* head = q.data_ptr<float>() + b * q.stride(0) + h * q.stride(1);
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t i = first + std::min(r, rows - 1);
    row_q[r] = head + (slots != nullptr ? slots[i] : i) * q.stride(2);
  }
}

using ProbabilitiesBlock = void (*)(const float* const*, int64_t, const float*, int64_t, int64_t, float,
                                    const float*, float*);
ProbabilitiesBlock probabilities_for(int64_t d) { return d == 32 ? &probabilities_block<32> : &probabilities_block<64>; }
#endif

}  // namespace

// q (batch, heads, queries, d), k and v (batch, heads, keys, d), each with a unit stride in d;
// bias (batch, keys) additive, or empty; slots (batch, n) int64, or empty: the queries to attend
// are q's rows slots[b] (a dropping layer's kept tokens), else all of them. Returns the context as
// (batch, queries or n, heads, d).
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                  const at::Tensor& slots, double scale) {
  check_inputs(q, k, bias);
  TORCH_CHECK(v.dim() == 4 && v.scalar_type() == at::kFloat && v.stride(3) == 1 && v.is_cpu() &&
                  v.sizes() == k.sizes(),
              "v must be float32 on the CPU, shaped as k, with unit stride in the last dimension");
  const int64_t batch = q.size(0), heads = q.size(1), d = q.size(3), keys = k.size(2);
  const bool picked = per_query(slots, batch, at::kLong, "slots");
  const int64_t queries = picked ? slots.size(1) : q.size(2);
  const int64_t* sp = picked ? slots.data_ptr<int64_t>() : nullptr;
  for (int64_t i = 0; i < slots.numel(); ++i) {
    TORCH_CHECK(sp[i] >= 0 && sp[i] < q.size(2), "slot ", sp[i], " is not a query of ", q.size(2));
  }
#ifdef DYNAQA_AVX512
  const int64_t padded = padded_keys(keys);
  auto out = at::empty({batch, queries, heads, d}, q.options());
  const int64_t blocks = (queries + kRows - 1) / kRows;
  const float* vp = v.data_ptr<float>();
  const float* bp = bias.numel() > 0 ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const auto probabilities = probabilities_for(d);
  const auto mix = d == 32 ? &mix_block<32> : &mix_block<64>;
  at::parallel_for(0, batch * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(kRows * padded), keys_t(d * padded);
    const float* row_q[kRows];
    int64_t transposed = -1;  // the head whose keys are in keys_t
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (heads * blocks), h = task / blocks % heads, first = task % blocks * kRows;
      const int64_t rows = std::min(kRows, queries - first);
      if (task / blocks != transposed) {
        transpose_keys(k, b, h, padded, keys_t.data());
        transposed = task / blocks;
      }
      block_rows(q, b, h, sp != nullptr ? sp + b * queries : nullptr, first, rows, row_q);
      probabilities(row_q, rows, keys_t.data(), keys, padded, static_cast<float>(scale),
                    bp != nullptr ? bp + b * keys : nullptr, scores.data());
      mix(scores.data(), rows, vp + b * v.stride(0) + h * v.stride(1), v.stride(2), keys, padded,
          op + ((b * queries + first) * heads + h) * d, heads * d);
    }
  });
  return out;
#else
  return at::Tensor();  // unreachable: fast_attention said no
#endif
}

// Drop-and-Restore's ranking: the attention each key receives from the queries q (batch, heads,
// n, d; any stride but the last), summed over heads and over the queries `counts` (batch, n) bool
// marks (empty: all). Returns (batch, keys). Each head's sums are kept apart and added in head
// order at the end, so the result does not depend on how the tasks were scheduled.
at::Tensor received(const at::Tensor& q, const at::Tensor& k, const at::Tensor& bias, const at::Tensor& counts,
                    double scale) {
  check_inputs(q, k, bias);
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), d = q.size(3), keys = k.size(2);
  const bool counted = per_query(counts, batch, at::kBool, "counts");
  TORCH_CHECK(!counted || counts.size(1) == queries, "counts must have one flag per query");
#ifdef DYNAQA_AVX512
  const int64_t padded = padded_keys(keys);
  auto per_head = at::zeros({batch, heads, padded}, q.options());
  const float* bp = bias.numel() > 0 ? bias.data_ptr<float>() : nullptr;
  const bool* cp = counted ? counts.data_ptr<bool>() : nullptr;
  float* totals = per_head.data_ptr<float>();
  const auto probabilities = probabilities_for(d);
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(kRows * padded), keys_t(d * padded);
    const float* row_q[kRows];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / heads, h = task % heads;
      transpose_keys(k, b, h, padded, keys_t.data());
      for (int64_t first = 0; first < queries; first += kRows) {
        const int64_t rows = std::min(kRows, queries - first);
        block_rows(q, b, h, nullptr, first, rows, row_q);
        probabilities(row_q, rows, keys_t.data(), keys, padded, static_cast<float>(scale),
                      bp != nullptr ? bp + b * keys : nullptr, scores.data());
        add_columns(scores.data(), rows, cp != nullptr ? cp + b * queries + first : nullptr, padded,
                    totals + task * padded);
      }
    }
  });
  auto out = at::empty({batch, keys}, q.options());
  for (int64_t b = 0; b < batch; ++b) {
    float* row = out.data_ptr<float>() + b * keys;
    std::copy_n(totals + b * heads * padded, keys, row);
    for (int64_t h = 1; h < heads; ++h) {
      const float* head = totals + (b * heads + h) * padded;
      for (int64_t j = 0; j < keys; ++j) row[j] += head[j];
    }
  }
  return out;
#else
  return at::Tensor();  // unreachable: fast_attention said no
#endif
}

}  // namespace dynaqa
