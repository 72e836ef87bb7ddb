"""The dynamic BERT for extractive QA, read top-down from its smallest part.

Embeddings -> SelfAttention -> FeedForward -> Layer -> Encoder -> QAHead -> DynamicBertForQA.

Every forward takes one `SubnetConfig`. Width keeps the first heads and FFN neurons of each layer
(rewiring has put the most important first), depth keeps DynaBERT's layers, and lengths drop the
least-attended tokens after each kept layer's attention (Drop-and-Restore).

Two weight paths, decided once: in training (or whenever autograd is on) the layers read views of
the shared parameters so every width trains the same weights; under `torch.inference_mode()` they
read `WidthWeights` packed at load, contiguous per width, so a forward never copies a slice.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.errors import InvalidInput, InvalidSubnet
from models.infer.quantize import Int8Linear, int8_linear
from models.nn import drop_restore
from models.nn.config import ArchConfig
from models.nn.subnet import SubnetConfig, kept_heads, kept_layers, kept_neurons

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QAOutput:
    """Span logits over the (padded) input tokens, and hidden states when asked for."""

    start_logits: Tensor  # (batch, tokens)
    end_logits: Tensor  # (batch, tokens)
    # Embedding output, then the output of every kept layer, each restored to full length.
    hidden_states: tuple[Tensor, ...] | None = None


@dataclass(frozen=True)
class Projection:
    """One linear map y = x W^T + b, float (views or packed copies) or INT8."""

    weight: Tensor  # (out, in)
    bias: Tensor  # (out,)
    int8: Int8Linear | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.int8 is not None:
            return self.int8(x)
        return F.linear(x, self.weight, self.bias)

    def packed(self) -> Projection:
        """A detached, contiguous copy: what inference reads so no forward slices a weight."""
        return Projection(self.weight.detach().contiguous().clone(), self.bias.detach().contiguous().clone())

    def quantized(self) -> Projection:
        """The INT8 copy (`Int8Linear`, on this CPU's kernel).

        Per-row weight scales, not one per matrix: on the shipped checkpoint (300 eval questions) the
        INT8 full model lost 5.5 F1 with one scale per matrix and 2.2 with one per row (session 5,
        7-bit activations), at the same speed.
        """
        return Projection(self.weight, self.bias, int8_linear(self.weight, self.bias))


@dataclass(frozen=True)
class LayerWeights:
    """The weights one layer runs with at one width: views in training, packed copies at inference."""

    heads: int
    qkv: Projection  # (3 * heads * head_size, hidden): query rows, then key, then value
    out: Projection  # (hidden, heads * head_size)
    ffn_in: Projection  # (neurons, hidden)
    ffn_out: Projection  # (hidden, neurons)

    def map(self, how: str) -> LayerWeights:
        """The same weights packed (`"packed"`) or INT8-quantised (`"quantized"`)."""
        return LayerWeights(
            self.heads, *(getattr(getattr(self, name), how)() for name in ("qkv", "out", "ffn_in", "ffn_out"))
        )


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
        """Attention probabilities (batch, heads, queries, keys), materialised for ranking."""
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
        out = self.dropout(w.out(context))
        return self.norm(out + residual)

    def forward(self, x: Tensor, bias: Tensor | None, w: LayerWeights, head_mask: Tensor | None = None) -> Tensor:
        """x (batch, tokens, hidden); bias (batch, 1, 1, tokens) additive key mask, None if none."""
        q, k, v = self.project(x, w)
        if head_mask is not None:
            context = self.mix(self.probabilities(q, k, bias), v)
        else:
            dropout = self.dropout_p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        return self.finish(context, x, w, head_mask)


class FeedForward(nn.Module):
    """The position-wise FFN with residual and LayerNorm; width keeps its first neurons."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.expand = nn.Linear(config.hidden_size, config.intermediate_size)
        self.contract = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def sliced(self, neurons: int) -> tuple[Projection, Projection]:
        return (
            Projection(self.expand.weight[:neurons], self.expand.bias[:neurons]),
            Projection(self.contract.weight[:, :neurons], self.contract.bias),
        )

    def forward(self, x: Tensor, w: LayerWeights) -> Tensor:
        inner = F.gelu(w.ffn_in(x))  # (batch, tokens, neurons)
        out = self.dropout(w.ffn_out(inner))
        return self.norm(out + x)


class Layer(nn.Module):
    """One transformer layer: attention, then (for the tokens kept) the FFN."""

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


def _key_bias(mask: Tensor, dtype: torch.dtype) -> Tensor | None:
    """(batch, tokens) bool -> (batch, 1, 1, tokens) additive bias: 0 to attend, min to ignore.

    None when every token is real (batch 1, or equal lengths): adding zeros costs a full pass.
    """
    if bool(mask.all()):
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)[
        :, None, None, :
    ]


def layer_step(
    layer: Layer, x: Tensor, bias: Tensor | None, w: LayerWeights, head_mask: Tensor | None = None
) -> Tensor:
    """One layer for every token: attention, then the FFN. What `torch.compile` turns into one call."""
    return layer.ffn(layer.attention(x, bias, w, head_mask), w)


def attend_step(layer: Layer, x: Tensor, bias: Tensor | None, w: LayerWeights) -> tuple[Tensor, Tensor]:
    """A dropping layer's first half: attention probabilities (to rank tokens by) and the values."""
    q, k, v = layer.attention.project(x, w)
    return layer.attention.probabilities(q, k, bias), v  # (batch, heads, tokens, tokens), (b, h, tokens, hs)


def finish_step(
    layer: Layer, probs: Tensor, v: Tensor, residual: Tensor, w: LayerWeights, head_mask: Tensor | None = None
) -> Tensor:
    """A dropping layer's second half, for the kept queries only: context, output projection, FFN."""
    return layer.ffn(layer.attention.finish(layer.attention.mix(probs, v), residual, w, head_mask), w)


@dataclass(frozen=True)
class LayerSteps:
    """The functions inference runs a layer with: whole, or in two halves around a token drop
    (the choice of tokens in between stays eager: it depends on per-example counts)."""

    whole: Callable[..., Tensor]  # layer_step
    attend: Callable[..., tuple[Tensor, Tensor]]  # attend_step
    finish: Callable[..., Tensor]  # finish_step; head masks (training only) always run eagerly


EAGER_STEPS = LayerSteps(layer_step, attend_step, finish_step)


def compiled_steps(probe: Callable[[LayerSteps], None]) -> LayerSteps:
    """The layer steps compiled by TorchInductor with symbolic shapes, or the eager ones if that fails.

    Why: at batch 1 a small sub-network is mostly Python and dispatcher time, not arithmetic. An
    INT8 linear map alone is ~12 eager ops (per-token scales, integer matmul, rescale), a layer
    ~60; compiled, a layer is one call of a few fused C++ loops around the matmuls. Width 0.5 INT8
    went from 3.1-3.4x to 4.3x the full model's speed in a side-by-side scratch timing (session 12;
    the session's search, compiled throughout, measured only 3.53x, and compiled INT8 scored up to
    0.3 F1 lower, which is why compiling is opt-in), and since every layer shares the same
    functions, a few graphs serve every width and depth:
    Dynamo specialises only on INT8 vs float, masked vs unmasked, and batch 1 vs more.

    `probe` runs the compiled steps on every such variant now, so compilation happens at load
    (not inside some request's budget) and a machine without a working C++ toolchain falls back
    to eager here, with a warning, instead of failing a request later.
    """
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    steps = LayerSteps(*(torch.compile(f, dynamic=True) for f in (layer_step, attend_step, finish_step)))
    try:
        probe(steps)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
        log.warning(json.dumps({"event": "compile failed, running eager", "error": str(exc)[:500]}))
        return EAGER_STEPS
    return steps


class Encoder(nn.Module):
    """The stack of layers, run at a sub-network's width, depth and lengths."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.steps = EAGER_STEPS  # compiled by `DynamicBertForQA.compile_layers`

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor,
        subnet: SubnetConfig,
        weights: list[LayerWeights],
        head_mask: Tensor | None,
        keep_hidden: bool,
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns the final hidden states (batch, tokens, hidden) at every original position."""
        layer_ids = kept_layers(self.config.num_hidden_layers, subnet.depth)
        hidden: list[Tensor] = []
        # Head masks are a training-time probe (rewiring); the compiled step never sees them.
        steps = self.steps if head_mask is None and not self.training else EAGER_STEPS
        if subnet.lengths is None:
            bias = _key_bias(attention_mask.bool(), x.dtype)
            for layer_id, w in zip(layer_ids, weights):
                mask = head_mask[layer_id, : w.heads] if head_mask is not None else None
                x = steps.whole(self.layers[layer_id], x, bias, w, mask)
                if keep_hidden:
                    hidden.append(x)
            return x, hidden

        tokens = drop_restore.TokenSet.full(attention_mask)
        real_lengths = tokens.alive
        in_place = not torch.is_grad_enabled() and not keep_hidden
        # Every token's last computed vector at its original position. Written only when tokens
        # are about to drop and at the end (or after every layer when hidden states are asked
        # for): a write per layer cost more than a mild late drop saves at batch 1.
        restored = x
        for layer_id, w, ratio in zip(layer_ids, weights, subnet.lengths, strict=True):
            layer = self.layers[layer_id]
            mask = head_mask[layer_id, : w.heads] if head_mask is not None else None
            counts = drop_restore.keep_counts(real_lengths, ratio, tokens.alive)
            bias = None if tokens.all_alive else _key_bias(tokens.mask, x.dtype)
            if counts != tokens.alive:
                if not keep_hidden:  # the tokens dropped here keep x, their previous layer's output
                    restored = drop_restore.restore(restored, x, tokens, in_place)
                # Rank by attention received, then finish attention only for the kept queries:
                # a dropped token keeps its previous layer's output, so its context is never used.
                probs, v = steps.attend(layer, x, bias, w)  # (batch, heads, tokens, tokens), values
                slots, tokens = drop_restore.select(drop_restore.attention_received(probs, tokens), tokens, counts)
                kept = drop_restore.gather_queries(probs, slots)  # (batch, heads, kept, tokens)
                x = steps.finish(layer, kept, v, drop_restore.gather_tokens(x, slots), w, mask)
            else:
                x = steps.whole(layer, x, bias, w, mask)
            if keep_hidden:
                restored = drop_restore.restore(restored, x, tokens, in_place)
                hidden.append(restored)
        if not keep_hidden:
            restored = drop_restore.restore(restored, x, tokens, in_place)
        return restored, hidden


class QAHead(nn.Module):
    """Start and end logits from the final hidden states; never sliced."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.span = nn.Linear(config.hidden_size, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.span(x)  # (batch, tokens, 2)
        return logits[..., 0].contiguous(), logits[..., 1].contiguous()


class DynamicBertForQA(nn.Module):
    """BERT for extractive QA whose every forward runs one sub-network."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.head = QAHead(config)
        self._packed: dict[tuple[float, bool], list[LayerWeights]] | None = None

    def pack_widths(self, widths: tuple[float, ...], int8: bool = True, compiled: bool = False) -> None:
        """Materialise contiguous per-width weights for inference (and INT8 copies). Call after
        the weights change. `compiled` compiles the layer steps (see `compiled_steps`).

        Also turns on flush-to-zero for denormal floats (process-wide): a softmax over hundreds of
        keys produces many denormals, which made Drop-and-Restore's attention up to 10x slower on
        x86 CPUs; flushing them changes no logit beyond 1e-30.
        """
        torch.set_flush_denormal(True)
        packed: dict[tuple[float, bool], list[LayerWeights]] = {}
        for width in widths:
            packed[(width, False)] = [layer.weights(width).map("packed") for layer in self.encoder.layers]
            if int8:
                packed[(width, True)] = [w.map("quantized") for w in packed[(width, False)]]
        self._packed = packed
        self.encoder.steps = EAGER_STEPS
        if compiled:
            self.compile_layers()

    def compile_layers(self) -> bool:
        """Compile the inference layer steps now (see `compiled_steps`); False if they fell back
        to eager. Needs packed weights: it runs every packed width once."""
        self.encoder.steps = compiled_steps(self._probe)
        return self.compiled

    @property
    def compiled(self) -> bool:
        """Whether inference runs the compiled layer steps."""
        return self.encoder.steps is not EAGER_STEPS

    def _probe(self, steps: LayerSteps) -> None:
        """Run `steps` on every variant serving meets: each packed width, float and INT8, one
        window or several, unmasked or padded, whole layers and both halves of a dropping one (so
        Dynamo compiles them all now). Seven tokens, five kept, three windows: sizes no weight
        has, so no size of the input is taken for a constant."""
        assert self._packed is not None
        layer, hidden = self.encoder.layers[0], self.config.hidden_size
        mask = torch.tensor([[True] * 7, [True] * 7, [True] * 4 + [False] * 3])
        with torch.inference_mode():
            for layers in self._packed.values():
                for batch, bias in ((1, None), (3, None), (3, _key_bias(mask[:3], torch.float32))):
                    x = torch.randn(batch, 7, hidden)
                    steps.whole(layer, x, bias, layers[0])
                    probs, v = steps.attend(layer, x, bias, layers[0])
                    slots = torch.arange(5).expand(batch, 5)
                    residual = drop_restore.gather_tokens(x, slots)
                    steps.finish(layer, drop_restore.gather_queries(probs, slots), v, residual, layers[0])

    def unpack(self) -> None:
        """Forget the packed copies (their weights are stale once parameters change)."""
        self._packed = None
        self.encoder.steps = EAGER_STEPS

    def train(self, mode: bool = True) -> DynamicBertForQA:
        if mode:
            self.unpack()
        return super().train(mode)

    def layer_weights(self, subnet: SubnetConfig) -> list[LayerWeights]:
        """The weights of the kept layers: packed when inferring, live views when training."""
        layer_ids = kept_layers(self.config.num_hidden_layers, subnet.depth)
        widths = subnet.widths(self.config.num_hidden_layers)
        inferring = not self.training and not torch.is_grad_enabled()
        keys = [(w, subnet.quantized) for w in widths]
        if inferring and self._packed is not None and all(k in self._packed for k in keys):
            return [self._packed[k][i] for k, i in zip(keys, layer_ids, strict=True)]
        if subnet.quantized:
            raise InvalidSubnet(f"{subnet.id}: INT8 weights exist only for inference on a packed model")
        return [self.encoder.layers[i].weights(w) for w, i in zip(widths, layer_ids, strict=True)]

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> None:
        """Shape errors named here rather than as an index error deep inside torch."""
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise InvalidInput(f"input_ids must be (batch, tokens) with tokens > 0, got {tuple(input_ids.shape)}")
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor.shape != input_ids.shape:
                raise InvalidInput(f"{name} has shape {tuple(tensor.shape)}, input_ids {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise InvalidInput(
                f"{input_ids.shape[1]} tokens exceed the model's {self.config.max_position_embeddings} positions"
            )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor,
        subnet: SubnetConfig | None = None,
        head_mask: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> QAOutput:
        """Span logits for a padded batch (batch, tokens); `head_mask` (layers, heads) scales heads."""
        subnet = subnet or SubnetConfig()
        subnet.check_layers(self.config.num_hidden_layers)
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids)
        weights = self.layer_weights(subnet)
        final, hidden = self.encoder(x, attention_mask, subnet, weights, head_mask, output_hidden_states)
        start, end = self.head(final)
        return QAOutput(start, end, (x, *hidden) if output_hidden_states else None)
