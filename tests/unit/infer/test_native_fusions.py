"""Inference's fused kernels that compute what torch's ops do, to float rounding rather than bit for
bit: the attention kernel (AVX-512, heads of 32 or 64), with the kept queries of a dropping layer
and its ranking, and the FFN's GELU between two INT8 maps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.infer import native
from models.infer.packing import pack_widths
from models.nn import drop_restore
from models.nn.config import ArchConfig
from models.nn.layers import SelfAttention, key_bias
from models.nn.subnet import SubnetConfig
from models.nn.transformer import DynamicBertForQA

needs_kernel = pytest.mark.skipif(
    native.kernels() is None or not native.attention_runs(32),
    reason="no native build or no AVX-512 here: torch's attention runs (test_fallbacks covers it)",
)


def qkv_views(batch: int, tokens: int, heads: int, head_size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q, k and v as the model makes them: strided views of one fused projection's output."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, tokens, 3, heads, head_size, generator=g) * 2
    return tuple(qkv.permute(2, 0, 3, 1, 4))


@needs_kernel
@pytest.mark.parametrize("head_size", [32, 64])
@pytest.mark.parametrize("tokens", [1, 7, 16, 45, 130])
def test_attention_matches_torch_with_and_without_padding(head_size: int, tokens: int) -> None:
    q, k, v = qkv_views(3, tokens, 4, head_size)
    mask = torch.ones(3, tokens, dtype=torch.bool)
    mask[1, tokens // 2 + 1 :] = False
    for bias in (None, key_bias(mask, torch.float32)):
        with torch.inference_mode():
            expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            context = native.attention(q, k, v, bias)
        assert context is not None and context.shape == (3, tokens, 4, head_size) and context.is_contiguous()
        torch.testing.assert_close(context.transpose(1, 2), expected, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_attention_for_fewer_queries_than_keys() -> None:
    """A dropping layer's kept queries attend over every key."""
    q, k, v = qkv_views(2, 50, 12, 32)
    kept = q[:, :, ::3].contiguous()
    with torch.inference_mode():
        context = native.attention(kept, k, v, None)
        expected = F.scaled_dot_product_attention(kept, k, v)
    assert context is not None
    torch.testing.assert_close(context.transpose(1, 2), expected, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_the_kept_queries_attend_in_place_as_if_gathered_first() -> None:
    """A dropping layer hands the kernel every query and the kept rows, per example."""
    q, k, v = qkv_views(2, 60, 12, 32, seed=3)
    slots = torch.stack([torch.randperm(60, generator=torch.Generator().manual_seed(s))[:21] for s in (1, 2)])
    with torch.inference_mode():
        in_place = native.attention(q, k, v, None, slots)
        gathered = native.attention(drop_restore.gather_queries(q, slots).contiguous(), k, v, None)
    assert in_place is not None and in_place.shape == (2, 21, 12, 32)
    assert torch.equal(in_place, gathered)
    with pytest.raises(RuntimeError, match="not a query"):
        native.attention(q, k, v, None, slots + 60)
    none = native.attention(q, k, v, None, slots[:, :0])
    assert none is not None and none.shape == (2, 0, 12, 32)


@needs_kernel
@pytest.mark.parametrize("tokens", [5, 33, 180])
def test_the_ranking_kernel_sums_what_the_eager_ranking_sums(tokens: int) -> None:
    q, k, _ = qkv_views(3, tokens, 12, 32, seed=tokens)
    mask = torch.ones(3, tokens, dtype=torch.long)
    mask[1, tokens // 2 + 1 :] = 0
    tokens_alive = drop_restore.TokenSet.full(mask)
    ranking = drop_restore.RankingQueries.of(tokens_alive)
    bias = key_bias(mask.bool(), torch.float32)
    attention = SelfAttention(ArchConfig(hidden_size=384, num_attention_heads=12)).eval()
    with torch.inference_mode():
        eager = attention.received(q, k, bias, ranking)
        fused = native.attention_received(ranking.pick(q), k, bias, ranking.valid)
    assert fused is not None and fused.shape == (3, tokens)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
    assert (fused[1, tokens // 2 + 1 :] == 0).all()  # padding keys receive nothing


@needs_kernel
def test_a_ranking_is_the_same_alone_and_padded_in_a_batch() -> None:
    q, k, _ = qkv_views(2, 90, 12, 32, seed=8)
    mask = torch.ones(2, 90, dtype=torch.bool)
    mask[1, 41:] = False
    counted = torch.ones(2, 45, dtype=torch.bool)
    counted[1, 21:] = False  # example 1's queries at 42, 44, ... are padding
    with torch.inference_mode():
        together = native.attention_received(q[:, :, ::2], k, key_bias(mask, torch.float32), counted)
        alone = native.attention_received(q[1:, :, :41:2], k[1:, :, :41], None, None)
    assert together is not None and alone is not None
    assert torch.equal(together[1, :41], alone[0])


@needs_kernel
def test_a_query_attends_the_same_alone_and_padded_in_a_batch() -> None:
    """Padding keys weigh exactly 0 and every sum runs in fixed lanes: equal, not close, so an
    answer does not depend on what it was batched with."""
    q, k, v = qkv_views(2, 70, 12, 32, seed=4)
    mask = torch.ones(2, 70, dtype=torch.bool)
    mask[0, 33:] = False
    with torch.inference_mode():
        together = native.attention(q, k, v, key_bias(mask, torch.float32))
        alone = native.attention(q[:1, :, :33], k[:1, :, :33], v[:1, :, :33], None)
    assert together is not None and alone is not None
    assert torch.equal(together[0, :33], alone[0])


@needs_kernel
def test_a_nan_spoils_its_own_query_and_no_other() -> None:
    q, k, v = (t.contiguous() for t in qkv_views(1, 20, 2, 32, seed=5))
    q[0, 1, 3, 7] = float("nan")
    with torch.inference_mode():
        context = native.attention(q, k, v, None)
        expected = F.scaled_dot_product_attention(q, k, v)
    assert context is not None and context[0, 3, 1].isnan().all()
    spoiled = torch.zeros(20, 2, dtype=torch.bool)
    spoiled[3, 1] = True
    torch.testing.assert_close(context[0][~spoiled], expected.transpose(1, 2)[0][~spoiled], rtol=1e-5, atol=1e-5)


@needs_kernel
def test_a_packed_model_attends_through_the_kernel_and_answers_as_torch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ArchConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    torch.manual_seed(0)
    model = DynamicBertForQA(config).eval()
    ids = torch.randint(1000, 8000, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 25:] = 0
    types = torch.zeros(2, 40, dtype=torch.long)
    calls: list[str] = []
    for name in ("attention", "attention_received"):
        kernel = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _n=name, _k=kernel: calls.append(_n) or _k(*a))
    dropping = SubnetConfig(lengths=(1.0, 0.6))
    with torch.inference_mode():
        expected = model(ids, mask, types)
        expected_dropping = model(ids, mask, types, dropping)
        assert not calls  # unpacked: torch's ops
        pack_widths(model, (1.0,), int8=False)
        fused_dropping = model(ids, mask, types, dropping)
        plain = model(ids, mask, types)
    # two layers, twice; the dropping layer's ranking and its kept queries too
    assert calls == ["attention", "attention_received", "attention", "attention", "attention"]
    torch.testing.assert_close(plain.start_logits, expected.start_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused_dropping.end_logits, expected_dropping.end_logits, rtol=1e-4, atol=1e-4)
    model.unpack()
    assert all(layer.attention.kernels is None for layer in model.encoder.layers)


def test_fallbacks() -> None:
    """Where the kernels do not run, None sends the caller to torch's attention and ranking ops."""
    q, k, v = qkv_views(1, 9, 2, 16)
    assert native.attention(q, k, v, None) is None  # heads of 16: no kernel
    assert native.attention_received(q, k, None, None) is None
    q, k, v = qkv_views(1, 9, 2, 32)
    with native.eager():
        assert native.attention(q, k, v, None) is None
        assert native.attention_received(q, k, None, None) is None
    assert native.attention(q.double(), k.double(), v.double(), None) is None
    assert native.attention_received(q.double(), k.double(), None, None) is None
    per_query = torch.zeros(1, 1, 9, 9)
    assert native.attention(q, k, v, per_query) is None and native.attention_received(q, k, per_query, None) is None


@pytest.mark.skipif(native.kernels() is None, reason="no native build: the eager ops run both ways")
def test_the_fused_gelu_quantises_as_the_eager_ops_to_within_a_rounding_step() -> None:
    """GELU between the FFN's two INT8 maps, fused into one pass: its erf is within 1.5e-7 of
    torch's, so a token's INT8 values may differ by one step where a value sits on a .5 tie."""
    g = torch.Generator().manual_seed(2)
    acc = torch.randint(-(2**18), 2**18, (64, 1536), generator=g, dtype=torch.int32)
    amax, scale = torch.rand(64, 1, generator=g) * 8, torch.rand(1536, generator=g) / 2000
    bias = torch.randn(1536, generator=g)
    fused, fused_amax = native.gelu_quantize_rows(acc, amax, scale, bias)
    with native.eager():
        eager, eager_amax = native.gelu_quantize_rows(acc, amax, scale, bias)
    steps = (fused.int() - eager.int()).abs()
    assert fused.dtype == torch.int8 and int(steps.max()) <= 1 and int(steps.sum()) <= fused.numel() // 1000
    torch.testing.assert_close(fused_amax, eager_amax, rtol=1e-6, atol=0)
    inner = F.gelu(native.dequantize_rows(acc, amax, scale, bias))
    torch.testing.assert_close(fused.float() * fused_amax / 127, inner, rtol=0, atol=float(inner.abs().max()) / 127)


def test_an_int8_ffn_runs_the_fused_gelu_and_stays_close_to_its_eager_twin() -> None:
    from models.infer.quantize import int8_linear

    g = torch.Generator().manual_seed(6)
    first = int8_linear(torch.randn(256, 64, generator=g) * 0.1, torch.randn(256, generator=g) * 0.1, "onednn")
    second = int8_linear(torch.randn(64, 256, generator=g) * 0.1, torch.randn(64, generator=g) * 0.1, "onednn")
    x = torch.randn(2, 30, 64, generator=g)
    with torch.inference_mode():
        fused = first.gelu_into(x, second)
        plain = second(F.gelu(first(x)))
    assert fused.shape == plain.shape == (2, 30, 64)
    assert (fused - plain).abs().max() <= 0.02 * plain.abs().max()
    assert math.isfinite(float(fused.sum()))
