"""Distillation: hidden states paired as DynaBERT pairs them, the sandwich rule, chosen pairs."""

import random

import pytest
import torch

from models.data import squad
from models.nn.subnet import SubnetConfig
from models.train.distill import LENGTH_FACTOR, length_sandwich, matched_hidden, sandwich, subnet_loss, width_depth_loss
from tests.conftest import tiny_model


def test_hidden_states_pair_as_dynabert_does() -> None:
    student = ("emb", "s0", "s2", "s4")  # embeddings, then outputs of kept layers 0, 2, 4
    teacher = ("emb", "t0", "t1", "t2", "t3", "t4", "t5")  # embeddings, then outputs of layers 0..5
    s, t = matched_hidden(student, teacher, (0, 2, 4))  # type: ignore[arg-type]
    # entering kept layer k <-> teacher entering layer layer_ids[k], plus the final outputs
    assert list(zip(s, t)) == [("emb", "emb"), ("s0", "t1"), ("s2", "t3"), ("s4", "t5")]


def test_chosen_pairs_replace_the_sampling(tiny_windows: squad.Windows) -> None:
    """`--pairs`: exactly those pairs, in that order, on every step (terms equal each pair's own loss)."""
    student, teacher = tiny_model(), tiny_model(seed=1)  # eval mode: no dropout, so terms are exact
    batch = squad.collate(tiny_windows, list(range(4)))
    pairs = (SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 0.75))
    with torch.no_grad():
        terms = list(width_depth_loss(student, teacher, pairs=pairs)(batch, random.Random(0)))
        teacher_out = teacher(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True
        )
        expected = [subnet_loss(student, p, batch, teacher_out, 1.0) for p in pairs]
    assert len(terms) == 2 and all(torch.allclose(t, e) for t, e in zip(terms, expected))


def test_sandwich_takes_largest_smallest_and_distinct_others() -> None:
    picks = sandwich(random.Random(0), 2)
    assert picks[0] == SubnetConfig(1.0, 1.0) and picks[1] == SubnetConfig(0.25, 0.5)
    assert len(set(picks)) == 4


def test_length_sandwich_is_lat_lengthdrop() -> None:
    rng = random.Random(3)
    for _ in range(50):
        largest, smallest, *others = length_sandwich(rng, 6, 2)
        assert largest == SubnetConfig(1.0, 1.0)  # the full model at full length anchors the rest
        assert (smallest.width, smallest.depth) == (0.25, 0.5)
        assert smallest.lengths == pytest.approx([0.8, 0.64, 0.512])  # every layer 0.8x the one before
        assert len(others) == 2
        for subnet in others:
            subnet.check_layers(6)
            assert subnet.lengths is not None
            previous = 1.0
            for ratio in subnet.lengths:  # each layer keeps between 0.8x and 1x of the layer before
                assert LENGTH_FACTOR * previous - 1e-3 <= ratio <= previous
                previous = ratio
    pairs = {(s.width, s.depth) for _ in range(200) for s in length_sandwich(rng, 6, 2)[2:]}
    assert len(pairs) == 12  # random pairs come from the whole grid, the full width and depth included
