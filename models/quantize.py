"""INT8 linear maps for inference, and whether this CPU runs them fast enough to be worth it.

The INT8 knob (issue #4) pays only where the CPU has an integer matmul kernel: the speed-ups in
the README were measured on an AVX-512 VNNI CPU, and on an AVX2-only one the same configurations
ran 40x slower than float. So the kernel is probed at start-up, not assumed.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Int8Mode = Literal["auto", "on", "off"]
MIN_INT8_SPEEDUP = 1.2  # below this, INT8 costs F1 for too little, and a noisy probe could flip
PROBE_SHAPE = (128, 384, 1536)  # tokens, in, out: a full-width FFN up-projection of a typical window


@functools.cache
def int8_weight_levels() -> int:
    """The largest |INT8 weight| this CPU's integer matmul multiplies exactly: 127, or 63.

    `torch._int_mm` runs oneDNN, which on x86 without VNNI (AVX2, AVX-512 before Cascade Lake)
    shifts activations to unsigned bytes and sums products in pairs of 16 bits: with 8-bit
    weights the sums overflow and every result is wrong (checked with ONEDNN_MAX_CPU_ISA=AVX2),
    with 7-bit weights they fit. Where oneDNN has no integer kernel at all (an AVX2-only AMD
    EPYC, session 13) a reference loop multiplies exactly and 127 comes back; `int8_speedup`
    is what says such a CPU should not use INT8. Probed once at the extremes, not read from flags.
    """
    x = torch.tensor([[127] * 64, [-127] * 64, [127, -127] * 32], dtype=torch.int8)
    for levels in (127, 63):
        w = torch.full((64, 2), levels, dtype=torch.int8)
        w[:, 1] = -levels
        if torch.equal(torch._int_mm(x, w), x.int() @ w.int()):
            return levels
    raise RuntimeError("this CPU's int8 matmul (torch._int_mm) is not exact even with 7-bit weights")


@dataclass(frozen=True)
class Int8Linear:
    """A linear map with INT8 weights (one scale per output row) and INT8 activations (one scale
    per token, computed at each call), multiplied exactly in 32-bit integers (`torch._int_mm`).

    Why per token rather than torch's dynamic quantisation (one activation scale per call, 7 bits
    on x86): one token with a large activation sets the scale for every other token of the call,
    and so for every request batched with it. Per-token scales make a window's answer independent
    of its batch; on the shipped checkpoint (whole eval split) width 0.75 INT8 scores 0.08 F1 below
    width 0.75 float, against 1.41 with torch's kernel and 0.73 with one 8-bit scale per call.
    """

    weight_t: Tensor  # (in, out) int8, transposed once for the matmul
    scale: Tensor  # (out,) float: the weight row's max |w| / levels
    bias: Tensor  # (out,)

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor) -> Int8Linear:
        """Quantise (out, in) float weights; an all-zero row gets a tiny scale, not a division by 0."""
        levels = int8_weight_levels()
        scale = weight.detach().abs().amax(dim=1).clamp_min(1e-12) / levels
        quantized = (weight.detach() * (1 / scale[:, None])).round().clamp(-levels, levels).to(torch.int8)
        return cls(quantized.t().contiguous(), scale, bias.detach().clone())

    def __call__(self, x: Tensor) -> Tensor:
        """x (..., in) float32 -> (..., out) float32."""
        rows = x.reshape(-1, x.shape[-1])
        amax = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12)
        # Multiply by 127 / amax rather than divide by amax / 127: the broadcast division is up to
        # 10x slower on this CPU for (384, 1536) inputs.
        quantized = rows.mul(127 / amax).round_().to(torch.int8)
        y = torch._int_mm(quantized, self.weight_t).float().mul_(amax * (1 / 127)).mul_(self.scale).add_(self.bias)
        return y.view(*x.shape[:-1], self.weight_t.shape[1])


def int8_speedup(threads: int | None = None) -> float:
    """Float time / INT8 time of one linear map on this CPU at `threads` intra-op threads (default:
    torch's current count). Measured once per count (see `_int8_speedup`)."""
    return _int8_speedup(threads or torch.get_num_threads())


@functools.cache
def _int8_speedup(threads: int) -> float:
    """Float time / INT8 time of one linear map on this CPU at `threads` intra-op threads.

    Why measure instead of reading CPU flags: `torch._int_mm` is fast only where oneDNN has an
    integer kernel for the CPU (VNNI, AMX). On the AVX2-only AMD EPYC of session 13 it ran a
    reference loop 40-50x slower than the float matmul, so a profile measured on a VNNI machine
    would have steered the service's tightest budgets to its slowest configurations. Median of
    five runs of each after a warm-up, on `PROBE_SHAPE`; about 1 s on such a CPU, ~1 ms elsewhere.
    """
    g = torch.Generator().manual_seed(0)
    tokens, d_in, d_out = PROBE_SHAPE
    weight = torch.randn(d_out, d_in, generator=g) * 0.05
    bias = torch.zeros(d_out)
    x = torch.randn(tokens, d_in, generator=g)
    int8 = Int8Linear.of(weight, bias)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return _median_seconds(lambda: F.linear(x, weight, bias)) / _median_seconds(lambda: int8(x))
    finally:
        torch.set_num_threads(previous)


def _median_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def int8_enabled(mode: Int8Mode) -> bool:
    """Whether to use INT8 configurations: `on` and `off` decide; `auto` asks this CPU
    (`int8_speedup` at the current thread count, at least `MIN_INT8_SPEEDUP`)."""
    if mode == "auto":
        return int8_speedup() >= MIN_INT8_SPEEDUP
    return mode == "on"
