"""Stages W and WD of DynaBERT: distil width, then width x depth, into one set of weights.

Stage W: every width learns from the teacher (the fine-tuned, rewired full model) with soft
cross-entropy on the start/end logits plus `hidden_weight` x MSE on the hidden states (embedding
output and every layer's output). All widths run on every batch; their losses are summed into one
optimiser step (DynaBERT's released code), each backpropagated on its own to bound memory.

Stage WD: width x depth sub-networks learn from the stage-W model at full size. Hidden states are
matched as DynaBERT does: the student's state entering its k-th kept layer against the teacher's
state entering that same original layer, plus the final output. Sampling follows the sandwich rule
by default (largest, smallest and `random_subnets` random pairs per step) instead of all 12.

Stage L (LengthDrop, LAT): the stage-WD model learns to answer from fewer tokens. Per step the
full model at full length, the smallest pair at the shortest lengths and `random_subnets` random
pairs at LengthDrop lengths (each kept layer keeps a uniform draw in [0.8, 1] of the tokens the
layer before kept) match the stage-WD model's full-size start/end distributions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from models.nn.subnet import DEPTHS, WIDTHS, SubnetConfig, kept_layer_count, kept_layers
from models.nn.transformer import DynamicBertForQA, QAOutput
from models.train.loop import LossFn
from models.train.losses import hidden_mse, logits_distillation


def _teacher_outputs(teacher: DynamicBertForQA, batch: dict[str, Tensor]) -> QAOutput:
    with torch.no_grad():
        return teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True)


def matched_hidden(
    student: tuple[Tensor, ...], teacher: tuple[Tensor, ...], layer_ids: Sequence[int]
) -> tuple[list[Tensor], list[Tensor]]:
    """Pairs (student state entering kept layer k, teacher state entering layer layer_ids[k]) + finals.

    `student` = (embeddings, output of each kept layer); `teacher` = (embeddings, output of every layer).
    """
    s = [student[k] for k in range(len(layer_ids))] + [student[-1]]
    t = [teacher[i] for i in layer_ids] + [teacher[-1]]
    return s, t


def subnet_loss(
    model: DynamicBertForQA,
    subnet: SubnetConfig,
    batch: dict[str, Tensor],
    teacher_out: QAOutput,
    hidden_weight: float,
) -> Tensor:
    with_hidden = hidden_weight > 0
    out = model(
        batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], subnet, output_hidden_states=with_hidden
    )
    mask = batch["attention_mask"]
    if not with_hidden:
        return logits_distillation(out, teacher_out, mask)
    assert out.hidden_states is not None and teacher_out.hidden_states is not None
    layer_ids = kept_layers(model.config.num_hidden_layers, subnet.depth)
    s, t = matched_hidden(out.hidden_states, teacher_out.hidden_states, layer_ids)
    return logits_distillation(out, teacher_out, mask) + hidden_weight * hidden_mse(s, t, mask)


def width_loss(model: DynamicBertForQA, teacher: DynamicBertForQA, hidden_weight: float = 0.1) -> LossFn:
    """Stage W: all four widths at full depth, one term each."""

    def loss(batch: dict[str, Tensor], rng: random.Random) -> Iterator[Tensor]:
        teacher_out = _teacher_outputs(teacher, batch)
        for width in WIDTHS:
            yield subnet_loss(model, SubnetConfig(width, 1.0), batch, teacher_out, hidden_weight)

    return loss


def sandwich(rng: random.Random, random_subnets: int) -> list[SubnetConfig]:
    """Largest, smallest and `random_subnets` distinct others of the width x depth grid."""
    largest, smallest = SubnetConfig(max(WIDTHS), max(DEPTHS)), SubnetConfig(min(WIDTHS), min(DEPTHS))
    middle = [SubnetConfig(w, d) for w in WIDTHS for d in DEPTHS if SubnetConfig(w, d) not in (largest, smallest)]
    return [largest, smallest, *rng.sample(middle, random_subnets)]


def width_depth_loss(
    model: DynamicBertForQA,
    teacher: DynamicBertForQA,
    hidden_weight: float = 1.0,
    random_subnets: int | None = 2,
    pairs: tuple[SubnetConfig, ...] | None = None,
) -> LossFn:
    """Stage WD: the sandwich rule (all 12 pairs when `random_subnets` is None), one term each.

    `pairs`, when given, replaces the sampling: those pairs on every step. A later round can then
    spend all of its steps on the pairs the frontier needs (a width-0.5 step costs a sixth of all
    12), with the full model kept in the set so the shared weights it reads stay anchored.
    """

    def loss(batch: dict[str, Tensor], rng: random.Random) -> Iterator[Tensor]:
        teacher_out = _teacher_outputs(teacher, batch)
        if pairs is not None:
            subnets = list(pairs)
        elif random_subnets is None:
            subnets = [SubnetConfig(w, d) for w in WIDTHS for d in DEPTHS]
        else:
            subnets = sandwich(rng, random_subnets)
        for subnet in subnets:
            yield subnet_loss(model, subnet, batch, teacher_out, hidden_weight)

    return loss


LENGTH_FACTOR = 0.8  # LAT: a layer keeps at least 0.8x the tokens of the layer before it


def length_drop(rng: random.Random, layers: int, min_factor: float = LENGTH_FACTOR) -> tuple[float, ...]:
    """LAT's LengthDrop: keep ratios whose per-layer factors are uniform in [min_factor, 1]."""
    ratios, running = [], 1.0
    for _ in range(layers):
        running *= rng.uniform(min_factor, 1.0)
        ratios.append(running)
    return tuple(ratios)


def length_sandwich(rng: random.Random, num_layers: int, random_subnets: int) -> list[SubnetConfig]:
    """Largest at full length, smallest at the shortest lengths, random pairs at LengthDrop lengths.

    The random pairs come from all 12 (the full width and depth included): length reduction of the
    largest networks is where the accuracy/latency front starts.
    """
    largest, smallest = SubnetConfig(max(WIDTHS), max(DEPTHS)), SubnetConfig(min(WIDTHS), min(DEPTHS))
    shortest = tuple(LENGTH_FACTOR ** (i + 1) for i in range(kept_layer_count(num_layers, smallest.depth)))
    picks = [largest, SubnetConfig(smallest.width, smallest.depth, shortest)]
    for _ in range(random_subnets):
        width, depth = rng.choice(WIDTHS), rng.choice(DEPTHS)
        picks.append(SubnetConfig(width, depth, length_drop(rng, kept_layer_count(num_layers, depth))))
    return picks


def length_drop_loss(
    model: DynamicBertForQA, teacher: DynamicBertForQA, hidden_weight: float = 0.0, random_subnets: int = 2
) -> LossFn:
    """Stage L: the length sandwich, one term each (LAT matches span distributions only: weight 0)."""

    def loss(batch: dict[str, Tensor], rng: random.Random) -> Iterator[Tensor]:
        teacher_out = _teacher_outputs(teacher, batch)
        for subnet in length_sandwich(rng, model.config.num_hidden_layers, random_subnets):
            yield subnet_loss(model, subnet, batch, teacher_out, hidden_weight)

    return loss
