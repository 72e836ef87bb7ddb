"""Cost of a sub-network in multiply-accumulates (docs/design.md, "Cost").

Per kept layer: 4*n_in*h*d_w (Q, K, V, output projections) + 2*n_in^2*d_w (scores and context)
+ 2*n_out*h*d_ffw (the two FFN matrices, for the tokens kept after attention), with h the hidden
size, d_w the kept heads x head size, d_ffw the kept FFN neurons. Embeddings and the span head are
left out (a few thousand MACs per token). Counted on the real, unpadded tokens: the padding policy
is dynamic padding, so padding is never computed worth counting.
"""

from __future__ import annotations

import math

from models.nn.config import ArchConfig
from models.nn.subnet import SubnetConfig, kept_heads, kept_layer_count, kept_neurons


def token_counts(subnet: SubnetConfig, num_layers: int, tokens: int) -> list[tuple[int, int]]:
    """(tokens entering, tokens kept) for each kept layer on an input of `tokens` real tokens."""
    layers = kept_layer_count(num_layers, subnet.depth)
    ratios = subnet.lengths or (1.0,) * layers
    counts = []
    n_in = tokens
    for ratio in ratios:
        n_out = min(n_in, max(1, math.ceil(tokens * ratio)))
        counts.append((n_in, n_out))
        n_in = n_out
    return counts


def macs(config: ArchConfig, subnet: SubnetConfig, tokens: int) -> int:
    """Multiply-accumulates of the encoder for one input of `tokens` real tokens."""
    subnet.check_layers(config.num_hidden_layers)
    h, heads = config.hidden_size, config.num_attention_heads
    total = 0
    widths = subnet.widths(config.num_hidden_layers)
    for (n_in, n_out), width in zip(token_counts(subnet, config.num_hidden_layers, tokens), widths, strict=True):
        d_w = kept_heads(heads, width) * config.head_size
        d_ffw = kept_neurons(heads, config.intermediate_size, width)
        total += 4 * n_in * h * d_w + 2 * n_in * n_in * d_w + 2 * n_out * h * d_ffw
    return total
