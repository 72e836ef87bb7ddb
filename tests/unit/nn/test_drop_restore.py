"""The ranking of Drop-and-Restore: attention received, from every query up to RANKING_QUERIES and
from an even stride of each example's own live tokens beyond, so a long neighbour in the batch
changes nothing; padding queries never vote."""

from __future__ import annotations

import torch

from models.nn.drop_restore import (
    RANKING_QUERIES,
    RankingQueries,
    TokenSet,
    attention_received,
    gather_queries,
    gather_tokens,
    ranking_stride,
    restore,
    select,
)
from models.nn.subnet import SubnetConfig
from models.nn.transformer import DynamicBertForQA


def test_short_inputs_rank_from_every_query_and_long_ones_from_a_bounded_sample() -> None:
    assert ranking_stride(1) == ranking_stride(RANKING_QUERIES) == 1
    assert ranking_stride(RANKING_QUERIES + 1) == 2
    for tokens in (100, 180, 384, 512):
        assert len(range(0, tokens, ranking_stride(tokens))) <= RANKING_QUERIES


def test_each_example_strides_over_its_own_live_tokens() -> None:
    mask = torch.zeros(2, 100, dtype=torch.long)
    mask[0, :100], mask[1, :40] = 1, 1
    ranking = RankingQueries.of(TokenSet.full(mask))
    assert ranking.slots is not None and ranking.valid is not None
    assert ranking.slots[0].tolist() == list(range(0, 100, 4))  # 25 queries, stride 4
    picked = ranking.slots[1][ranking.valid[1]].tolist()
    assert picked == list(range(0, 40, 2))  # 20 queries, stride 2, never a padding slot
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, ranking.slots.shape[1], 100, generator=g)
    received = attention_received(probs, ranking)
    assert torch.allclose(received[1], probs[1, :, : len(picked)].sum(dim=(0, 1)))
    assert torch.allclose(received[0], probs[0].sum(dim=(0, 1)))


def test_a_long_neighbour_does_not_change_which_tokens_a_short_window_keeps(tiny: DynamicBertForQA) -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 29000, (2, 120), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 50:] = 0
    types = torch.zeros_like(ids)
    types[:, 10:] = 1
    subnet = SubnetConfig(1.0, 1.0, (0.8, 0.6, 0.5, 0.3))
    with torch.inference_mode():
        together = tiny(ids, mask, types, subnet).start_logits
        alone = tiny(ids[1:, :50], mask[1:, :50], types[1:, :50], subnet).start_logits
    assert (together[1, :50] - alone[0]).abs().max() <= 1e-4


def test_a_single_example_takes_the_index_select_path_to_the_same_values_and_positions() -> None:
    """Batch 1 skips advanced indexing (`select`, `gather_*`, `restore`): a batch of two equal
    rows, which takes the general path, must give the same slots, positions and vectors."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 30, 8, generator=g)
    hidden[1] = hidden[0]
    queries = torch.randn(2, 3, 30, 4, generator=g)
    queries[1] = queries[0]
    scores = torch.rand(2, 30, generator=g)
    scores[1] = scores[0]
    results = []
    for rows in (slice(0, 1), slice(0, 2)):
        tokens = TokenSet.full(torch.ones(rows.stop - rows.start, 30, dtype=torch.long))
        slots, first = select(scores[rows], tokens, [20] * (rows.stop - rows.start))
        later, second = select(scores[rows, :20] * -1, first, [12] * (rows.stop - rows.start))
        buffer = hidden[rows].clone()
        restored = restore(buffer, gather_tokens(hidden[rows], slots)[:, later[0]] * 2, second, in_place=True)
        results.append((second.positions[0], gather_queries(queries[rows], slots)[0], restored[0]))
    for alone, batched in zip(*results, strict=True):
        assert torch.equal(alone, batched)
    assert not torch.equal(results[0][2], hidden[0])  # the restore wrote something
