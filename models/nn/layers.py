"""The parts of the dynamic BERT, smallest first: Embeddings -> SelfAttention -> FeedForward ->
Layer, and the QAHead on top. `models.nn.transformer` stacks them into the model.

Every part runs at the width its `LayerWeights` carry: views of the shared parameters in training,
inference's packed copies (`models.infer.packing`) under `torch.inference_mode()`, so a forward
never copies a slice. Inference may also install its own attention kernels (`AttentionKernels`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.nn import drop_restore
from models.nn.config import ArchConfig
from models.nn.subnet import kept_heads, kept_neurons
from models.nn.weights import LayerWeights, Projection


class Embeddings(nn.Module):
    """Word + position + segment embeddings, LayerNorm, dropout. Never sliced by width."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.segment = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.segment(token_type_ids)
        return self.dropout(self.norm(x))  # (batch, tokens, hidden)


def key_bias(mask: Tensor, dtype: torch.dtype) -> Tensor | None:
    """(batch, tokens) bool -> (batch, 1, 1, tokens) additive bias: 0 to attend, min to ignore.

    None when every token is real (batch 1, or equal lengths): adding zeros costs a full pass.
    """
    if bool(mask.all()):
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)[
        :, None, None, :
    ]


@dataclass(frozen=True)
class AttentionKernels:
    """Inference's own attention, installed by `models.infer.packing`. Each returns None where it
    does not run, and torch's ops run instead."""

    # (q, k, v, key bias, query slots or None) -> context (batch, queries, heads, head_size)
    context: Callable[[Tensor, Tensor, Tensor, Tensor | None, Tensor | None], Tensor | None]
    # (ranking queries, k, key bias, counted queries or None) -> attention each key receives (batch, keys)
    received: Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor | None]


class SelfAttention(nn.Module):
    """Multi-head self-attention with its output projection, residual and LayerNorm."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.head_size = config.head_size
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.output = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout_p = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.kernels: AttentionKernels | None = None  # inference's, installed by `models.infer.packing`

    def sliced(self, heads: int) -> tuple[Projection, Projection]:
        """Differentiable views of the first `heads` heads (qkv fused by concatenation)."""
        d = heads * self.head_size
        weight = torch.cat([self.query.weight[:d], self.key.weight[:d], self.value.weight[:d]])
        bias = torch.cat([self.query.bias[:d], self.key.bias[:d], self.value.bias[:d]])
        return Projection(weight, bias), Projection(self.output.weight[:, :d], self.output.bias)

    def project(self, x: Tensor, w: LayerWeights) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys, values, each (batch, heads, tokens, head_size), from one fused matmul."""
        batch, tokens, _ = x.shape
        qkv = w.qkv(x)  # (batch, tokens, 3 * heads * head_size)
        qkv = qkv.view(batch, tokens, 3, w.heads, self.head_size).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def probabilities(self, q: Tensor, k: Tensor, bias: Tensor | None) -> Tensor:
        """Attention probabilities (batch, heads, queries, keys), materialised (ranking, head masks)."""
        scores = (q * (1.0 / math.sqrt(self.head_size))) @ k.transpose(-1, -2)
        if bias is not None:
            scores = scores + bias
        return scores.softmax(dim=-1)

    def mix(self, probs: Tensor, v: Tensor) -> Tensor:
        """Context vectors (batch, heads, queries, head_size) from (possibly row-selected) probs."""
        return F.dropout(probs, self.dropout_p, self.training) @ v

    def finish(self, context: Tensor, residual: Tensor, w: LayerWeights, head_mask: Tensor | None) -> Tensor:
        """Output projection, residual and LayerNorm for the queries in `context`."""
        if head_mask is not None:
            context = context * head_mask[None, :, None, None]
        batch, _, tokens, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, tokens, -1)  # (batch, tokens, heads*hs)
        out = w.out(context)
        if self.training:  # no module call per map in inference: Python time counts at batch 1
            out = self.dropout(out)
        return self.norm(out + residual)

    def _kernels(self) -> AttentionKernels | None:
        """Inference's kernels, where installed and nothing needs autograd or dropout."""
        return None if self.training or torch.is_grad_enabled() else self.kernels

    def context(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        bias: Tensor | None,
        head_mask: Tensor | None = None,
        slots: Tensor | None = None,
    ) -> Tensor:
        """Context vectors (batch, heads, queries, head_size) over every key, for the queries in `q`
        or, given `slots` (batch, kept), for those rows of `q` only."""
        kernels = self._kernels()
        if kernels is not None and head_mask is None:
            context = kernels.context(q, k, v, bias, slots)  # (batch, queries, heads, head_size)
            if context is not None:
                return context.transpose(1, 2)
        if slots is not None:
            q = drop_restore.gather_queries(q, slots)
        if head_mask is not None:
            return self.mix(self.probabilities(q, k, bias), v)
        dropout = self.dropout_p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)

    def received(self, q: Tensor, k: Tensor, bias: Tensor | None, ranking: drop_restore.RankingQueries) -> Tensor:
        """Drop-and-Restore's ranking: the attention each key receives (batch, keys) from the
        ranking queries among `q`, summed over heads."""
        queries = ranking.pick(q)
        kernels = self._kernels()
        if kernels is not None:
            scores = kernels.received(queries, k, bias, ranking.valid)
            if scores is not None:
                return scores
        return drop_restore.attention_received(self.probabilities(queries, k, bias), ranking)

    def forward(self, x: Tensor, bias: Tensor | None, w: LayerWeights, head_mask: Tensor | None = None) -> Tensor:
        """x (batch, tokens, hidden); bias (batch, 1, 1, tokens) additive key mask, None if none."""
        q, k, v = self.project(x, w)
        return self.finish(self.context(q, k, v, bias, head_mask), x, w, head_mask)


class FeedForward(nn.Module):
    """The position-wise FFN with residual and LayerNorm; width keeps its first neurons."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.expand = nn.Linear(config.hidden_size, config.intermediate_size)
        self.contract = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def sliced(self, neurons: int) -> tuple[Projection, Projection]:
        """Differentiable views of the first `neurons` neurons."""
        return (
            Projection(self.expand.weight[:neurons], self.expand.bias[:neurons]),
            Projection(self.contract.weight[:, :neurons], self.contract.bias),
        )

    def forward(self, x: Tensor, w: LayerWeights) -> Tensor:
        out = w.ffn_in.gelu_into(x, w.ffn_out)  # through (batch, tokens, neurons)
        if self.training:
            out = self.dropout(out)
        return self.norm(out + x)


class Layer(nn.Module):
    """One transformer layer: attention, then (for the tokens kept) the FFN.

    A layer that drops tokens runs in two halves, `attend` and `finish`, around the choice of
    tokens (which stays eager: it depends on per-example counts); `forward` is the whole layer.
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.attention = SelfAttention(config)
        self.ffn = FeedForward(config)

    def weights(self, width: float) -> LayerWeights:
        """Views of this layer's parameters at `width` (the training path)."""
        heads = kept_heads(self.config.num_attention_heads, width)
        neurons = kept_neurons(self.config.num_attention_heads, self.config.intermediate_size, width)
        return LayerWeights(heads, *self.attention.sliced(heads), *self.ffn.sliced(neurons))

    def forward(self, x: Tensor, bias: Tensor | None, w: LayerWeights, head_mask: Tensor | None = None) -> Tensor:
        """The layer for every token: attention, then the FFN."""
        return self.ffn(self.attention(x, bias, w, head_mask), w)

    def attend(self, x: Tensor, w: LayerWeights) -> tuple[Tensor, Tensor, Tensor]:
        """A dropping layer's first step: queries, keys and values (batch, heads, tokens, hs)."""
        return self.attention.project(x, w)

    def finish(
        self,
        x: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        slots: Tensor,
        bias: Tensor | None,
        w: LayerWeights,
        head_mask: Tensor | None = None,
    ) -> Tensor:
        """A dropping layer's second half for the tokens it keeps, at `slots` (batch, kept): their
        attention over every key, the output projection and the FFN, as (batch, kept, hidden)."""
        context = self.attention.context(q, k, v, bias, head_mask, slots)
        residual = drop_restore.gather_tokens(x, slots)
        return self.ffn(self.attention.finish(context, residual, w, head_mask), w)


class QAHead(nn.Module):
    """Start and end logits from the final hidden states; never sliced."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.span = nn.Linear(config.hidden_size, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.span(x)  # (batch, tokens, 2)
        return logits[..., 0].contiguous(), logits[..., 1].contiguous()
