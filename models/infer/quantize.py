"""INT8 linear maps for inference, and whether this CPU runs them fast enough to be worth it.

The INT8 knob (issue #4) pays only where the CPU has an integer matmul kernel: oneDNN's
(`torch._int_mm`) is fast on AVX-512 VNNI and ran 40x slower than float on an AVX2-only AMD EPYC,
where FBGEMM's map alone is 1.3-1.9x faster than float in scratch timings of 9 shapes (the
probe's one shape, interleaved with float at two threads, as the probe then ran, read 1.16-1.60x).
So the kernels are probed at start-up, not assumed.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from models.infer import native

Int8Mode = Literal["auto", "on", "off"]
Int8Kernel = Literal["onednn", "fbgemm"]
FBGEMM_WEIGHT_LEVELS = 63  # see FbgemmInt8Linear
# Below this, INT8 costs F1 for too little. Not higher: FBGEMM on a 2-core AVX2 VM read 1.16-1.60x
# (24 fresh processes, interleaved medians at two threads, as the probe then ran), so at 1.2
# replicas of one machine flipped between fronts; CPUs where INT8 does not pay read 0.03x (oneDNN's
# reference loop).
MIN_INT8_SPEEDUP = 1.1
KERNEL_ENV = "DYNAQA_INT8_KERNEL"  # auto (the probe), onednn or fbgemm
PROBE_SHAPE = (128, 384, 1536)  # tokens, in, out: a full-width FFN up-projection of a typical window
# One thread: a kernel's speed per core is what decides, and two threads on a node busy with other
# work wait for each other's time slices (fresh processes there read 0.6x for a 3.3x kernel).
PROBE_THREADS = 1


@functools.cache
def int8_weight_levels() -> int:
    """The largest |INT8 weight| this CPU's integer matmul multiplies exactly: 127, or 63.

    `torch._int_mm` runs oneDNN, which on x86 without VNNI (AVX2, AVX-512 before Cascade Lake)
    shifts activations to unsigned bytes and sums products in pairs of 16 bits: with 8-bit
    weights the sums overflow and every result is wrong (checked with ONEDNN_MAX_CPU_ISA=AVX2),
    with 7-bit weights they fit. Where oneDNN has no integer kernel at all (an AVX2-only AMD
    EPYC) a reference loop multiplies exactly and 127 comes back; the kernel probe
    (`kernel_speedups`) is what says such a CPU should use FBGEMM's kernel instead. Probed once
    at the extremes, not read from flags.
    """
    x = torch.tensor([[127] * 64, [-127] * 64, [127, -127] * 32], dtype=torch.int8)
    for levels in (127, 63):
        w = torch.full((64, 2), levels, dtype=torch.int8)
        w[:, 1] = -levels
        if torch.equal(torch._int_mm(x, w), x.int() @ w.int()):
            return levels
    raise RuntimeError("this CPU's int8 matmul (torch._int_mm) is not exact even with 7-bit weights")


class Int8Linear(Protocol):
    """A linear map with INT8 weights (one scale per output row) and INT8 activations (one scale per
    token, computed at each call): `int8_linear` builds this CPU's kind (`int8_kernel`: oneDNN's
    where it pays, else FBGEMM's).

    Why per token rather than torch's dynamic quantisation (one activation scale per call): one
    token with a large activation sets the scale for every other token of the call, and so for
    every request batched with it (and for the padding). Per-token scales make a window's answer
    independent of its batch; on the shipped checkpoint (whole eval split) width 0.75 INT8 scored
    0.08 F1 below width 0.75 float, against 1.41 with torch's per-call scale (7-bit) and 0.73 with
    one 8-bit scale per call.
    """

    def __call__(self, x: Tensor) -> Tensor:
        """x (..., in) float32 -> (..., out) float32."""
        ...


@dataclass(frozen=True)
class OneDnnInt8Linear:
    """Per-token INT8 activations times per-row INT8 weights, summed exactly in 32-bit integers by
    `torch._int_mm` (oneDNN): fast where oneDNN has an integer kernel for the CPU (VNNI, AMX)."""

    weight_t: Tensor  # (in, out) int8, transposed once for the matmul
    scale: Tensor  # (out,) float: the weight row's max |w| / levels
    bias: Tensor  # (out,)

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor) -> OneDnnInt8Linear:
        """Quantise (out, in) float weights; an all-zero row gets a tiny scale, not a division by 0."""
        native.kernels()  # build or load the fused scaling now, at load time, not in some request
        quantized, scale = _rows_to_int8(weight, int8_weight_levels())
        return cls(quantized.t().contiguous(), scale, bias.detach().clone())

    def __call__(self, x: Tensor) -> Tensor:
        quantized, amax = native.quantize_rows(x.reshape(-1, x.shape[-1]))  # fused in C++ where it builds
        return self._products(quantized, amax, x.shape)

    def gelu_into(self, x: Tensor, after: OneDnnInt8Linear) -> Tensor:
        """after(GELU(self(x))) with the GELU between the two integer matmuls fused into one pass
        from this map's int32 products to `after`'s INT8 input (`native.gelu_quantize_rows`)."""
        quantized, amax = native.quantize_rows(x.reshape(-1, x.shape[-1]))
        inner = torch._int_mm(quantized, self.weight_t)
        return after._products(*native.gelu_quantize_rows(inner, amax, self.scale, self.bias), x.shape)

    def _products(self, quantized: Tensor, amax: Tensor, shape: torch.Size) -> Tensor:
        """The map's float output, shaped as its input `shape` with this map's out features last."""
        y = native.dequantize_rows(torch._int_mm(quantized, self.weight_t), amax, self.scale, self.bias)
        return y.view(*shape[:-1], self.weight_t.shape[1])


@dataclass(frozen=True)
class FbgemmInt8Linear:
    """The same per-token x per-row scheme on FBGEMM's prepacked INT8 linear, which has AVX2
    integer kernels where oneDNN has none (an AVX2-only AMD EPYC: 1.3-1.9x the float map, before
    the per-token scaling around it, which `benchmarks.op_profile` weighs).

    FBGEMM takes one activation scale per call; dividing each token by its own max |x| first
    makes one fixed scale (1/127: every row is now within [-1, 1]) a per-token scale, and the
    output is multiplied back row by row: W (x / a) * a = W x. A scale from the call's min/max
    (`quantized::linear_dynamic`) would still depend on the other rows of the batch. Weights keep
    7 bits: AVX2 adds unsigned-byte x signed-byte products in pairs into 16 bits, which
    255 * 127 * 2 overflows and 255 * 63 * 2 does not; 8-bit activations keep each token's
    resolution.
    """

    packed: torch.ScriptObject  # FBGEMM's prepacked (in, out) weight, no bias
    bias: Tensor  # (out,)
    out_features: int

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor) -> FbgemmInt8Linear:
        native.kernels()  # build or load the fused scaling now, at load time, not in some request
        quantized, scale = _rows_to_int8(weight, FBGEMM_WEIGHT_LEVELS)
        engine = torch.backends.quantized.engine
        # FBGEMM's packing whatever the process-wide engine says (oneDNN's packed weights have no
        # such call); quantised tensors are deprecated, and FBGEMM's prepack still takes them.
        torch.backends.quantized.engine = "fbgemm"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                zero = torch.zeros(len(scale), dtype=torch.long)
                q = torch.quantize_per_channel(quantized.float() * scale[:, None], scale.double(), zero, 0, torch.qint8)
                packed = torch.ops.quantized.linear_prepack(q, None)
        finally:
            torch.backends.quantized.engine = engine
        return cls(packed, bias.detach().clone(), weight.shape[0])

    def __call__(self, x: Tensor) -> Tensor:
        scaled, amax = native.scale_rows(x.reshape(-1, x.shape[-1]))  # fused in C++ where it builds
        # Fixed scale 1/127, zero point 128: the unsigned byte 128 + round(127 x / max |x|), the
        # same integers as oneDNN's signed round(127 x / max |x|) up to rounding ties.
        y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(scaled, 1 / 127, 128, self.packed)
        return native.unscale_rows_(y, amax, self.bias).view(*x.shape[:-1], self.out_features)


KERNELS: dict[Int8Kernel, Callable[[Tensor, Tensor], Int8Linear]] = {
    "onednn": OneDnnInt8Linear.of,
    "fbgemm": FbgemmInt8Linear.of,
}


def _rows_to_int8(weight: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """(out, in) float weights as int8 in [-levels, levels] and one float scale per row; an
    all-zero row gets a tiny scale, not a division by 0."""
    scale = weight.detach().abs().amax(dim=1).clamp_min(1e-12) / levels
    quantized = (weight.detach() * (1 / scale[:, None])).round().clamp(-levels, levels).to(torch.int8)
    return quantized, scale


def int8_linear(weight: Tensor, bias: Tensor, kernel: Int8Kernel | None = None) -> Int8Linear:
    """The INT8 copy of y = x W^T + b, on `kernel` (default: `int8_kernel()`, this CPU's)."""
    return KERNELS[kernel or int8_kernel()](weight, bias)


def int8_speedup() -> float:
    """Float time / INT8 time of one linear map on this CPU, on the kernel `int8_kernel` picks
    (`kernel_speedups`; measured once per process)."""
    speedups = kernel_speedups()
    return speedups[pick_kernel(speedups)]


def int8_kernel() -> Int8Kernel:
    """The INT8 kernel this CPU runs: `DYNAQA_INT8_KERNEL` where set (to re-score another CPU's
    front here, or to overrule the probe); else oneDNN's where it pays, else FBGEMM where this torch
    has it, else oneDNN (then INT8 is off in `auto`)."""
    forced = os.environ.get(KERNEL_ENV, "auto")
    if forced != "auto":
        if forced not in available_kernels():
            raise ValueError(f"{KERNEL_ENV}={forced!r}: this torch runs {list(available_kernels())} (or 'auto')")
        return forced  # type: ignore[return-value]
    return pick_kernel(kernel_speedups())


def pick_kernel(speedups: dict[Int8Kernel, float]) -> Int8Kernel:
    """The kernel `int8_kernel` takes for these probe readings (`kernel_speedups`)."""
    if speedups["onednn"] >= MIN_INT8_SPEEDUP or "fbgemm" not in speedups:
        return "onednn"
    return "fbgemm"


def served_kernel(speedups: dict[Int8Kernel, float]) -> Int8Kernel | None:
    """The kernel `DYNAQA_INT8=auto` serves INT8 on for these probe readings, or None (float)."""
    kernel = pick_kernel(speedups)
    return kernel if speedups[kernel] >= MIN_INT8_SPEEDUP else None


def kernel_speedups() -> dict[Int8Kernel, float]:
    """Float time / INT8 time of one linear map per available kernel on one core of this CPU
    (`PROBE_THREADS`), whatever thread count the process serves with: measured once per process
    (`measure_speedups`)."""
    return dict(_kernel_speedups())  # a copy: the cache stays as measured


@functools.cache
def _kernel_speedups() -> dict[Int8Kernel, float]:
    return measure_speedups(PROBE_THREADS)


def measure_speedups(threads: int) -> dict[Int8Kernel, float]:
    """Float time / INT8 time of one linear map per kernel on this CPU at `threads` intra-op threads.

    Why measure instead of reading CPU flags: `torch._int_mm` is fast only where oneDNN has an
    integer kernel for the CPU (VNNI, AMX). On an AVX2-only AMD EPYC it ran a
    reference loop 40-50x slower than the float matmul (FBGEMM: 1.3-1.9x faster than float there),
    so a profile measured on a VNNI machine would have steered the service's tightest budgets to
    its slowest configurations. Timed on `PROBE_SHAPE` in interleaved rounds (`_interleaved_fastest`);
    well under a second on such a CPU, a few ms elsewhere.

    Why the probe takes one thread: the first replica's reading is the fleet's decision
    (`service.calibration`), and at two threads on a 2-core node kept busy by other work 2 to 6 of
    8 fresh processes read 0.6-0.67x for a kernel that reads 3.1-3.6x idle (a parallel map waits
    out the time slice its other thread lost; `python -m benchmarks.int8_probe`). One thread
    removes that stall (there all 8 read 3.2-3.6x busy), and each run's fastest round discards the
    rounds a busy node preempted.
    """
    g = torch.Generator().manual_seed(0)
    tokens, d_in, d_out = PROBE_SHAPE
    weight = torch.randn(d_out, d_in, generator=g) * 0.05
    bias = torch.zeros(d_out)
    x = torch.randn(tokens, d_in, generator=g)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            runs: dict[str, Callable[[], object]] = {"float": lambda: F.linear(x, weight, bias)}
            for kernel in available_kernels():
                runs[kernel] = functools.partial(KERNELS[kernel](weight, bias), x)
            fastest = _interleaved_fastest(runs)
        return {k: fastest["float"] / fastest[k] for k in available_kernels()}
    finally:
        torch.set_num_threads(previous)


def _interleaved_fastest(
    runs: dict[str, Callable[[], object]], rounds: int = 15, warmup: int = 3, hopeless: float = 4.0
) -> dict[str, float]:
    """Fastest seconds of each run over `rounds` round-robin rounds, after `warmup` rounds that are
    not counted, except to spare the rounds a run whose every warm-up took over `hopeless` times
    the first run's slowest (oneDNN's reference loop on AVX2: 40x float, 50 ms a call at two
    threads): its fastest is over its warm-ups, enough to say it does not pay.

    Round-robin because the first probe (float, then each kernel, five runs each) read FBGEMM at
    1.34-2.11x in 8 fresh processes on one idle 2-core AVX2 VM, and `dynaqa search --int8 auto`
    once turned INT8 off there (under the then 1.2x); on CI the test process and the server it
    started disagreed the same way. Measured one after the other, float and INT8 each saw a
    different machine, and float's weights stayed hot in cache as they never are in the model.
    Interleaved (medians, two threads), the same VM read 1.16-1.60x: lower, and still spread from
    process to process, which is why `MIN_INT8_SPEEDUP` sits below that range. The fastest round
    rather than the median: other work on the node only ever adds time to a round, and by medians
    one thread read 2.7-10.8x for a 3.3x kernel with two processes spinning (scratch).
    """
    warm: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(warmup):
        for name, run in runs.items():
            warm[name].append(_seconds(run))
    first = max(next(iter(warm.values())))
    times = {name: t for name, t in warm.items() if min(t) > hopeless * first}
    active = [name for name in runs if name not in times]
    for name in active:
        times[name] = []
    for _ in range(rounds):
        for name in active:
            times[name].append(_seconds(runs[name]))
    return {name: min(t) for name, t in times.items()}


def _seconds(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


@functools.cache
def available_kernels() -> tuple[Int8Kernel, ...]:
    """oneDNN's always; FBGEMM's where this torch has it (x86 builds) and still builds and runs
    its prepacked weights, which take quantised tensors (deprecated since torch 2.13)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return ("onednn",)
    try:
        with torch.inference_mode():
            FbgemmInt8Linear.of(torch.ones(2, 2), torch.zeros(2))(torch.ones(1, 2))
    except (AttributeError, RuntimeError, NotImplementedError):
        return ("onednn",)
    return ("onednn", "fbgemm")


def int8_enabled(mode: Int8Mode) -> bool:
    """Whether to use INT8 configurations: `on` and `off` decide; `auto` asks this CPU
    (`int8_speedup`, at least `MIN_INT8_SPEEDUP`)."""
    if mode == "auto":
        return served_kernel(kernel_speedups()) is not None
    return mode == "on"
