"""The dynamic BERT for extractive QA: the layers of `models.nn.layers`, stacked.

Embeddings -> Encoder (of `Layer`s) -> QAHead, in DynamicBertForQA.

Every forward takes one `SubnetConfig`. Width keeps the first heads and FFN neurons of each layer
(rewiring has put the most important first), depth keeps DynaBERT's layers, and lengths drop the
least-attended tokens after each kept layer's attention (Drop-and-Restore).

Two weight paths, decided once: in training (or whenever autograd is on) the layers read views of
the shared parameters so every width trains the same weights; under `torch.inference_mode()` they
read the `PackedWeights` that `models.infer.packing` installs at load, contiguous per width, so a
forward never copies a slice. The encoder runs its layers through `LayerSteps` for the same reason:
the eager methods of `Layer`, or the compiled ones `models.infer.compile` installs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.errors import InvalidInput, InvalidSubnet
from models.nn import drop_restore
from models.nn.config import ArchConfig
from models.nn.layers import AttentionKernels, Embeddings, Layer, QAHead, key_bias
from models.nn.subnet import SubnetConfig, kept_layers
from models.nn.weights import LayerWeights, PackedWeights


@dataclass(frozen=True)
class QAOutput:
    """Span logits over the (padded) input tokens, and hidden states when asked for."""

    start_logits: Tensor  # (batch, tokens)
    end_logits: Tensor  # (batch, tokens)
    # Embedding output, then the output of every kept layer, each restored to full length.
    hidden_states: tuple[Tensor, ...] | None = None


@dataclass(frozen=True)
class LayerSteps:
    """The functions the encoder runs a layer with, each taking the layer first: `Layer`'s own
    methods, or compiled copies of them (`models.infer.compile`)."""

    whole: Callable[..., Tensor]  # Layer.forward
    attend: Callable[..., tuple[Tensor, Tensor, Tensor]]  # Layer.attend
    finish: Callable[..., Tensor]  # Layer.finish; head masks (training only) always run eagerly


EAGER_STEPS = LayerSteps(Layer.forward, Layer.attend, Layer.finish)

# One kept layer as the encoder runs it: the layer, its weights at its width, its head mask.
KeptLayer = tuple[Layer, LayerWeights, Tensor | None]


def dropping_layer(
    steps: LayerSteps,
    kept_layer: KeptLayer,
    x: Tensor,
    bias: Tensor | None,
    tokens: drop_restore.TokenSet,
    counts: list[int],
) -> tuple[Tensor, drop_restore.TokenSet]:
    """One layer keeping `counts[b]` tokens of example b, ranked by attention received (from a
    strided sample of its queries): their outputs (batch, max(counts), hidden) and the tokens alive.
    Only kept queries attend: a dropped token keeps its previous output, its context is unused."""
    layer, w, head_mask = kept_layer
    q, k, v = steps.attend(layer, x, w)
    received = layer.attention.received(q, k, bias, drop_restore.RankingQueries.of(tokens))
    slots, tokens = drop_restore.select(received, tokens, counts)
    return steps.finish(layer, x, q, k, v, slots, bias, w, head_mask), tokens


class Encoder(nn.Module):
    """The stack of layers, run at a sub-network's width, depth and lengths."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.steps = EAGER_STEPS  # inference's compiled steps are installed by `models.infer.compile`

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor,
        subnet: SubnetConfig,
        weights: Sequence[LayerWeights],
        head_mask: Tensor | None,
        keep_hidden: bool,
    ) -> tuple[Tensor, list[Tensor]]:
        """Returns the final hidden states (batch, tokens, hidden) at every original position."""
        layer_ids = kept_layers(self.config.num_hidden_layers, subnet.depth)
        # Head masks are a training-time probe (rewiring); the compiled step never sees them.
        steps = self.steps if head_mask is None and not self.training else EAGER_STEPS
        kept: list[KeptLayer] = [
            (self.layers[i], w, head_mask[i, : w.heads] if head_mask is not None else None)
            for i, w in zip(layer_ids, weights)
        ]
        if subnet.lengths is None:
            return self._every_token(x, attention_mask, kept, steps, keep_hidden)
        return self._drop_and_restore(x, attention_mask, kept, subnet.lengths, steps, keep_hidden)

    @staticmethod
    def _every_token(
        x: Tensor, attention_mask: Tensor, kept: list[KeptLayer], steps: LayerSteps, keep_hidden: bool
    ) -> tuple[Tensor, list[Tensor]]:
        """Every kept layer over every token (no length reduction)."""
        bias = key_bias(attention_mask.bool(), x.dtype)
        hidden: list[Tensor] = []
        for layer, w, mask in kept:
            x = steps.whole(layer, x, bias, w, mask)
            if keep_hidden:
                hidden.append(x)
        return x, hidden

    @staticmethod
    def _drop_and_restore(
        x: Tensor,
        attention_mask: Tensor,
        kept: list[KeptLayer],
        lengths: tuple[float, ...],
        steps: LayerSteps,
        keep_hidden: bool,
    ) -> tuple[Tensor, list[Tensor]]:
        """Every kept layer over the tokens still alive, each keeping its share of them."""
        hidden: list[Tensor] = []
        tokens = drop_restore.TokenSet.full(attention_mask)
        real_lengths = tokens.alive
        in_place = not torch.is_grad_enabled() and not keep_hidden
        # Every token's last computed vector at its original position. Written only when tokens
        # are about to drop and at the end (or after every layer when hidden states are asked
        # for): a write per layer cost more than a mild late drop saves at batch 1.
        restored = x
        for (layer, w, mask), ratio in zip(kept, lengths, strict=True):
            counts = drop_restore.keep_counts(real_lengths, ratio, tokens.alive)
            bias = None if tokens.all_alive else key_bias(tokens.mask, x.dtype)
            if counts != tokens.alive:
                if not keep_hidden:  # the tokens dropped here keep x, their previous layer's output
                    restored = drop_restore.restore(restored, x, tokens, in_place)
                x, tokens = dropping_layer(steps, (layer, w, mask), x, bias, tokens, counts)
            else:
                x = steps.whole(layer, x, bias, w, mask)
            if keep_hidden:
                restored = drop_restore.restore(restored, x, tokens, in_place)
                hidden.append(restored)
        if not keep_hidden:
            restored = drop_restore.restore(restored, x, tokens, in_place)
        return restored, hidden


class DynamicBertForQA(nn.Module):
    """BERT for extractive QA whose every forward runs one sub-network."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.head = QAHead(config)
        # Inference's per-width copies (`models.infer.packing.pack_widths`); None until packed.
        self.packed: PackedWeights | None = None

    @property
    def compiled(self) -> bool:
        """Whether inference runs compiled layer steps (`models.infer.compile.compile_layers`)."""
        return self.encoder.steps is not EAGER_STEPS

    def unpack(self) -> None:
        """Forget the packed copies, the compiled steps (their weights are stale once parameters
        change) and inference's attention kernels."""
        self.packed = None
        self.encoder.steps = EAGER_STEPS
        self.use_attention_kernels(None)

    def use_attention_kernels(self, kernels: AttentionKernels | None) -> None:
        """Every layer's inference attention and ranking: `kernels` where they run, else torch's ops."""
        for layer in self.encoder.layers:
            layer.attention.kernels = kernels

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
        packed = self.packed
        if inferring and packed is not None and all(k in packed for k in keys):
            return [packed[k][i] for k, i in zip(keys, layer_ids, strict=True)]
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
