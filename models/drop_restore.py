"""Drop-and-Restore (LAT, Kim & Cho 2021): per-layer token dropping for a padded batch.

After a layer's attention, each example keeps its `ceil(ratio * real_length)` most attended
tokens; the rest skip the FFN and every later layer. Every layer's surviving outputs are scattered
back to their original positions, so at the end every token reaches the span head with the last
vector computed for it. Order inside the kept set does not matter (positions were added at the
embeddings), so the kept tokens are never re-sorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenSet:
    """The tokens still alive in a batch: where they came from and which slots are real."""

    positions: Tensor  # (batch, tokens) original position of each slot
    mask: Tensor  # (batch, tokens) bool, True for a real, still-kept token

    @classmethod
    def full(cls, attention_mask: Tensor) -> TokenSet:
        batch, tokens = attention_mask.shape
        positions = torch.arange(tokens, device=attention_mask.device).expand(batch, tokens)
        return cls(positions, attention_mask.bool())


def keep_counts(real_lengths: Tensor, ratio: float) -> Tensor:
    """Tokens each example keeps at a ratio of its real length: ceil, and never below one."""
    return torch.ceil(real_lengths.to(torch.float64) * ratio).long().clamp(min=1)


def attention_received(probs: Tensor, query_mask: Tensor) -> Tensor:
    """Importance of each key token: attention it receives, summed over heads and real queries.

    probs: (batch, heads, queries, keys); query_mask: (batch, queries) bool.
    """
    if bool(query_mask.all()):
        return probs.sum(dim=(1, 2))  # (batch, keys)
    per_query = probs.sum(dim=1)  # (batch, queries, keys)
    return (query_mask[:, None, :].to(probs.dtype) @ per_query)[:, 0]  # (batch, keys)


def select(scores: Tensor, tokens: TokenSet, counts: Tensor) -> tuple[Tensor, TokenSet]:
    """Pick each example's `counts[b]` best-scored live tokens; padding never outranks real ones.

    Returns the slot indices to gather (batch, kept) and the new token set. The tensor keeps
    `max(counts)` slots; an example that keeps fewer marks its extra slots as not alive.
    """
    kept = int(counts.max())
    scores = scores.masked_fill(~tokens.mask, float("-inf"))
    slots = scores.topk(kept, dim=1).indices  # (batch, kept) best first
    rank_ok = torch.arange(kept, device=scores.device)[None, :] < counts[:, None]
    index = (rows(slots.shape[0], slots.device), slots)
    return slots, TokenSet(tokens.positions[index], tokens.mask[index] & rank_ok)


def rows(batch: int, device: torch.device) -> Tensor:
    """(batch, 1) row index for advanced indexing, which is several times faster than gather."""
    return torch.arange(batch, device=device)[:, None]


def gather_tokens(hidden: Tensor, slots: Tensor) -> Tensor:
    """hidden (batch, tokens, hidden) -> (batch, kept, hidden) at `slots` (batch, kept)."""
    return hidden[rows(hidden.shape[0], hidden.device), slots]


def gather_queries(probs: Tensor, slots: Tensor) -> Tensor:
    """probs (batch, heads, queries, keys) -> (batch, heads, kept, keys): the kept query rows."""
    return probs[rows(probs.shape[0], probs.device), :, slots].transpose(1, 2)


def restore(buffer: Tensor, hidden: Tensor, tokens: TokenSet) -> Tensor:
    """Write the live tokens of `hidden` back to their original positions in `buffer`."""
    index = (rows(buffer.shape[0], buffer.device), tokens.positions)
    merged = torch.where(tokens.mask[:, :, None], hidden, buffer[index])
    return buffer.index_put(index, merged)
