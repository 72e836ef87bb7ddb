"""The ranking of Drop-and-Restore: attention received, from every query up to RANKING_QUERIES and
from an even stride of them beyond; padding queries never vote and padding keys never win."""

from __future__ import annotations

import torch

from models.nn import drop_restore
from models.nn.drop_restore import RANKING_QUERIES, TokenSet, attention_received, ranking_stride


def test_short_inputs_rank_from_every_query_and_long_ones_from_a_bounded_sample() -> None:
    assert ranking_stride(1) == ranking_stride(RANKING_QUERIES) == 1
    assert ranking_stride(RANKING_QUERIES + 1) == 2
    for tokens in (100, 180, 384, 512):
        assert len(range(0, tokens, ranking_stride(tokens))) <= RANKING_QUERIES


def test_a_strided_sample_sums_only_its_real_queries() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 10, 10, generator=g).softmax(-1)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    tokens = TokenSet.full(mask)
    sampled = attention_received(probs[:, :, ::3], tokens, stride=3)
    # example 1 keeps queries 0 and 3 (6 and 9 are padding); example 0 keeps 0, 3, 6, 9
    assert torch.allclose(sampled[0], probs[0, :, ::3].sum(dim=(0, 1)))
    assert torch.allclose(sampled[1], probs[1, :, [0, 3]].sum(dim=(0, 1)))
    assert torch.allclose(attention_received(probs, tokens)[0], probs[0].sum(dim=(0, 1)))


def test_padding_never_outranks_a_real_token_whatever_its_score() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    tokens = TokenSet.full(mask)
    scores = torch.tensor([[0.1, 0.2, 0.3, 9.0, 9.0]])
    slots, kept = drop_restore.select(scores, tokens, [2])
    assert sorted(slots[0].tolist()) == [1, 2] and kept.alive == [2]
