"""Network rewiring (DynaBERT section 3.1): put the most important heads and neurons first.

Width w keeps "the first" round(H*w) heads and FFN neurons, so before width training we sort
them by importance, estimated on training data with first-order Taylor terms:
  head importance   = sum over batches of |dL/d(head mask)|
  neuron importance = |sum_j W1[i,j] dL/dW1[i,j] + b1[i] dL/db1[i]| + |sum_j W2[j,i] dL/dW2[j,i]|
Permuting heads (rows of Q, K, V; columns of the output projection) and neurons (rows of the
FFN's first matrix, columns of its second) leaves the full model's function unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from models.nn.transformer import DynamicBertForQA
from models.train.losses import span_loss


@dataclass(frozen=True)
class Importance:
    heads: Tensor  # (layers, heads)
    neurons: Tensor  # (layers, intermediate_size)


def importance(model: DynamicBertForQA, batches: Iterable[dict[str, Tensor]], progress: bool = True) -> Importance:
    """Accumulate head and neuron importance over labelled training batches (full sub-network)."""
    config = model.config
    was_training = model.training
    model.eval()  # no dropout: the estimate should reflect the deterministic function
    head_mask = torch.ones(config.num_hidden_layers, config.num_attention_heads, requires_grad=True)
    heads = torch.zeros(config.num_hidden_layers, config.num_attention_heads)
    neurons = torch.zeros(config.num_hidden_layers, config.intermediate_size)
    for batch in tqdm(list(batches), desc="importance", unit="batch", disable=not progress):
        model.zero_grad(set_to_none=True)
        head_mask.grad = None
        with torch.enable_grad():
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], head_mask=head_mask)
            span_loss(out, batch["start_positions"], batch["end_positions"]).backward()
        assert head_mask.grad is not None
        heads += head_mask.grad.abs()
        for i, layer in enumerate(model.encoder.layers):
            w1, b1, w2 = layer.ffn.expand.weight, layer.ffn.expand.bias, layer.ffn.contract.weight
            assert w1.grad is not None and b1.grad is not None and w2.grad is not None
            incoming = (w1 * w1.grad).sum(dim=1) + b1 * b1.grad  # (neurons,)
            outgoing = (w2 * w2.grad).sum(dim=0)  # (neurons,)
            neurons[i] += (incoming.abs() + outgoing.abs()).detach()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return Importance(heads, neurons)


@torch.no_grad()
def permute(model: DynamicBertForQA, head_order: Tensor, neuron_order: Tensor) -> None:
    """Reorder every layer's heads and FFN neurons; `*_order[l]` lists old indices, new first."""
    head_size = model.config.head_size
    for i, layer in enumerate(model.encoder.layers):
        # Index of every output unit of Q/K/V in the new head order: (heads * head_size,)
        units = (head_order[i][:, None] * head_size + torch.arange(head_size)[None, :]).reshape(-1)
        attention = layer.attention
        for linear in (attention.query, attention.key, attention.value):
            linear.weight.copy_(linear.weight[units])
            linear.bias.copy_(linear.bias[units])
        attention.output.weight.copy_(attention.output.weight[:, units])
        ffn = layer.ffn
        order = neuron_order[i]
        ffn.expand.weight.copy_(ffn.expand.weight[order])
        ffn.expand.bias.copy_(ffn.expand.bias[order])
        ffn.contract.weight.copy_(ffn.contract.weight[:, order])
    model.unpack()


def rewire(model: DynamicBertForQA, batches: Iterable[dict[str, Tensor]], progress: bool = True) -> Importance:
    """Estimate importance on `batches`, then sort heads and neurons by it, most important first."""
    scores = importance(model, batches, progress)
    permute(
        model,
        torch.argsort(scores.heads, dim=1, descending=True),
        torch.argsort(scores.neurons, dim=1, descending=True),
    )
    return scores
