"""Inference's weights, made once at load: contiguous copies per width, and their INT8 twins.

`pack_widths` installs them on the model (`DynamicBertForQA.packed`), which then reads them under
`torch.inference_mode()` instead of slicing its parameters in every forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.infer import native
from models.infer.quantize import Int8Kernel, Int8Linear, OneDnnInt8Linear, int8_linear
from models.nn.layers import AttentionKernels
from models.nn.transformer import DynamicBertForQA
from models.nn.weights import LayerWeights, Projection


@dataclass(frozen=True)
class Int8Projection(Projection):
    """A projection computed by its INT8 copy (`Int8Linear`, on this CPU's kernel); `weight` and
    `bias` stay the float ones it was made from."""

    int8: Int8Linear

    def __call__(self, x: Tensor) -> Tensor:
        return self.int8(x)

    def gelu_into(self, x: Tensor, after: Projection) -> Tensor:
        """Fused where both maps are oneDNN's: the GELU'd activations go from one map's int32
        products to the next map's INT8 input in one pass (`native.gelu_quantize_rows`)."""
        first, second = self.int8, getattr(after, "int8", None)
        if isinstance(first, OneDnnInt8Linear) and isinstance(second, OneDnnInt8Linear):
            return first.gelu_into(x, second)
        return super().gelu_into(x, after)


def packed(projection: Projection) -> Projection:
    """A detached, contiguous copy: what inference reads so no forward slices a weight."""
    return Projection(projection.weight.detach().contiguous().clone(), projection.bias.detach().contiguous().clone())


def quantized(projection: Projection, kernel: Int8Kernel | None = None) -> Int8Projection:
    """The INT8 copy of `projection`, on `kernel` (default: this CPU's, `int8_kernel`).

    Per-row weight scales, not one per matrix: on the shipped checkpoint (300 eval questions) the
    INT8 full model lost 5.5 F1 with one scale per matrix and 2.2 with one per row (7-bit
    activations), at the same speed.
    """
    return Int8Projection(projection.weight, projection.bias, int8_linear(projection.weight, projection.bias, kernel))


def pack_widths(
    model: DynamicBertForQA, widths: tuple[float, ...], int8: bool = True, kernel: Int8Kernel | None = None
) -> None:
    """Install contiguous per-width weights on `model` for inference (and INT8 copies on `kernel`,
    default this CPU's, when `int8`), back on eager layer steps. Call again after the weights change.

    Also turns on flush-to-zero for denormal floats (process-wide): a softmax over hundreds of
    keys produces many denormals, which made Drop-and-Restore's attention up to 10x slower on
    x86 CPUs; flushing them changes no logit beyond 1e-30.
    """
    torch.set_flush_denormal(True)
    weights: dict[tuple[float, bool], list[LayerWeights]] = {}
    for width in widths:
        weights[(width, False)] = [layer.weights(width).map(packed) for layer in model.encoder.layers]
        if int8:
            weights[(width, True)] = [w.map(lambda p: quantized(p, kernel)) for w in weights[(width, False)]]
    model.unpack()
    model.packed = weights
    model.use_attention_kernels(AttentionKernels(native.attention, native.attention_received))
