"""Drop-and-Restore (LAT, Kim & Cho 2021): per-layer token dropping for a padded batch.

After a layer's attention, each example keeps its `ceil(ratio * real_length)` most attended
tokens; the rest skip the FFN and every later layer. "Most attended" is estimated from at most
`RANKING_QUERIES` queries per example, evenly strided over its live tokens (a stride from its own
count, so its ranking does not depend on what it is batched with): the attention a token receives
is a sum over queries, and a strided sample of them ranks tokens nearly as all of them do, while
the full probability matrix a dropping layer used to materialise cost about what it saved.
Every layer's surviving outputs are scattered back to their original positions, so at the end every
token reaches the span head with the last vector computed for it. Order inside the kept set does
not matter (positions were added at the embeddings), so the kept tokens are never re-sorted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

RANKING_QUERIES = 32


def ranking_stride(tokens: int) -> int:
    """Every how-many-th query ranks the tokens: all of them up to `RANKING_QUERIES`."""
    return max(1, math.ceil(tokens / RANKING_QUERIES))


@dataclass(frozen=True)
class RankingQueries:
    """The slots whose queries rank an example's tokens: every `ranking_stride(alive)`-th of its
    live slots (which are its first `alive` slots: right padding, then rank order after a drop)."""

    stride: int  # where every example strides alike (one example, or no padding); else 0
    slots: Tensor | None = None  # (batch, S) each example's ranking slots, padded with its last
    valid: Tensor | None = None  # (batch, S) bool: False for the padding of `slots`

    @classmethod
    def of(cls, tokens: TokenSet) -> RankingQueries:
        strides = [ranking_stride(n) for n in tokens.alive]
        if tokens.all_alive:
            return cls(strides[0])
        counts = torch.tensor([math.ceil(n / s) for n, s in zip(tokens.alive, strides)], device=tokens.mask.device)
        j = torch.arange(int(counts.max()), device=tokens.mask.device)[None, :]
        valid = j < counts[:, None]
        slots = torch.minimum(j, counts[:, None] - 1) * torch.tensor(strides, device=tokens.mask.device)[:, None]
        return cls(0, slots, valid)

    def pick(self, queries: Tensor) -> Tensor:
        """(batch, heads, tokens, head_size) -> (batch, heads, S, head_size): the ranking queries."""
        return queries[:, :, :: self.stride] if self.slots is None else gather_queries(queries, self.slots)


@dataclass
class TokenSet:
    """The tokens still alive in a batch: where they came from and which slots are real.

    `all_alive` is known on the host so the common case (batch 1, or no padding and equal keep
    counts) skips masking work without a tensor round trip.
    """

    positions: Tensor  # (batch, tokens) original position of each slot
    mask: Tensor  # (batch, tokens) bool, True for a real, still-kept token
    alive: list[int]  # per example, how many of its slots are alive
    all_alive: bool
    untouched: bool = False  # nothing dropped yet: slot i is still token i

    @classmethod
    def full(cls, attention_mask: Tensor) -> TokenSet:
        batch, tokens = attention_mask.shape
        positions = torch.arange(tokens, device=attention_mask.device).expand(batch, tokens)
        alive = [int(n) for n in attention_mask.sum(dim=1).tolist()]
        return cls(positions, attention_mask.bool(), alive, all(n == tokens for n in alive), untouched=True)


def keep_counts(real_lengths: list[int], ratio: float, alive: list[int]) -> list[int]:
    """Tokens each example keeps: ceil(ratio * its real length), at least one, never more than alive."""
    return [min(a, max(1, math.ceil(n * ratio - 1e-9))) for n, a in zip(real_lengths, alive)]


def attention_received(probs: Tensor, ranking: RankingQueries) -> Tensor:
    """Importance of each key token: attention it receives, summed over heads and each example's
    own ranking queries.

    probs: (batch, heads, ranking queries, keys) -> (batch, keys).
    """
    if ranking.valid is None:
        return probs.sum(dim=(1, 2))
    per_query = probs.sum(dim=1)  # (batch, ranking queries, keys)
    return (ranking.valid[:, None, :].to(probs.dtype) @ per_query)[:, 0]


def select(scores: Tensor, tokens: TokenSet, counts: list[int]) -> tuple[Tensor, TokenSet]:
    """Pick each example's `counts[b]` best-scored live tokens; padding never outranks real ones.

    Returns the slot indices to gather (batch, kept) and the new token set. The tensor keeps
    `max(counts)` slots; an example that keeps fewer marks its extra slots as not alive.
    """
    kept = max(counts)
    if not tokens.all_alive:
        scores = scores.masked_fill(~tokens.mask, float("-inf"))
    slots = scores.topk(kept, dim=1).indices  # (batch, kept) best first
    all_alive = tokens.all_alive and all(c == kept for c in counts)
    if all_alive:
        mask = torch.ones_like(slots, dtype=torch.bool)
    else:
        rank_ok = (
            torch.arange(kept, device=scores.device)[None, :] < torch.tensor(counts, device=scores.device)[:, None]
        )
        mask = gather_tokens(tokens.mask, slots) & rank_ok
    return slots, TokenSet(gather_tokens(tokens.positions, slots), mask, counts, all_alive)


def rows(batch: int, device: torch.device) -> Tensor:
    """(batch, 1) row index for advanced indexing, which is several times faster than gather."""
    return torch.arange(batch, device=device)[:, None]


def gather_tokens(values: Tensor, slots: Tensor) -> Tensor:
    """values (batch, tokens, ...) -> (batch, kept, ...) at `slots` (batch, kept): hidden states,
    and a token set's positions and mask."""
    if slots.shape[0] == 1:  # batch 1, the serving case: one index op instead of advanced indexing's several
        return values.index_select(1, slots[0])
    return values[rows(values.shape[0], values.device), slots]


def gather_queries(queries: Tensor, slots: Tensor) -> Tensor:
    """queries (batch, heads, tokens, head_size) -> (batch, heads, kept, head_size): the kept ones."""
    if slots.shape[0] == 1:
        return queries.index_select(2, slots[0])
    return queries[rows(queries.shape[0], queries.device), :, slots].transpose(1, 2)


def restore(buffer: Tensor, hidden: Tensor, tokens: TokenSet, in_place: bool) -> Tensor:
    """Write the live tokens of `hidden` back to their original positions in `buffer`.

    In place under inference (one buffer for the whole forward); out of place when autograd
    needs every intermediate. Before any token has dropped, `hidden` already holds every token in
    place and is returned as it is (padding positions are never answers, so their content is moot).
    """
    if tokens.untouched:
        return hidden
    if buffer.shape[0] == 1 and tokens.all_alive:
        positions = tokens.positions[0]
        return buffer.index_copy_(1, positions, hidden) if in_place else buffer.index_copy(1, positions, hidden)
    index = (rows(buffer.shape[0], buffer.device), tokens.positions)
    merged = hidden if tokens.all_alive else torch.where(tokens.mask[:, :, None], hidden, buffer[index])
    if in_place:
        return buffer.index_put_(index, merged)
    return buffer.index_put(index, merged)
