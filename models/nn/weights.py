"""The weights one layer runs with at one width, and where inference's packed copies plug in.

Training reads views of the shared parameters, so every width trains the same weights. Inference
reads copies made once at load (`models.infer.packing`: contiguous per width, INT8 where asked);
the model holds them as `PackedWeights` and never learns how they were made, so this layer of the
package knows nothing of INT8 kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Projection:
    """One linear map y = x W^T + b: views of the parameters, or a copy made for inference.

    A subclass may compute the same map another way (infer's INT8 copy) and keep `weight` and
    `bias` for what reads their shapes."""

    weight: Tensor  # (out, in)
    bias: Tensor  # (out,)

    def __call__(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def gelu_into(self, x: Tensor, after: Projection) -> Tensor:
        """after(GELU(self(x))): the FFN's inside, one call so an INT8 pair can fuse its middle."""
        return after(F.gelu(self(x)))


@dataclass(frozen=True)
class LayerWeights:
    """The four projections of one layer at one width, and how many heads that width keeps."""

    heads: int
    qkv: Projection  # (3 * heads * head_size, hidden): query rows, then key, then value
    out: Projection  # (hidden, heads * head_size)
    ffn_in: Projection  # (neurons, hidden)
    ffn_out: Projection  # (hidden, neurons)

    def map(self, how: Callable[[Projection], Projection]) -> LayerWeights:
        """The same layer with every projection replaced by `how(projection)` (packing, INT8)."""
        return LayerWeights(self.heads, how(self.qkv), how(self.out), how(self.ffn_in), how(self.ffn_out))


# Inference's weights by (width, INT8 or not): one `LayerWeights` per layer of the model.
PackedWeights = Mapping[tuple[float, bool], Sequence[LayerWeights]]
