"""Inference's fused kernels in C++, compiled at first use: the per-token scaling of the INT8
linear maps, the GELU between the FFN's two INT8 maps, and attention (with Drop-and-Restore's
ranking) on AVX-512 CPUs.

Why the scaling: FBGEMM's INT8 linear takes one activation scale per call, so `FbgemmInt8Linear`
divides each token by its own max |x| first and multiplies the output back; `OneDnnInt8Linear`
quantises each token itself and scales the int32 products back. Eagerly that is five to eight
tensor ops per map, each a pass over memory and a dispatcher trip: on a 2-core AVX2 VM fusing
FBGEMM's saved 40-80 us per call on a median window (183 tokens), 8-24% of an INT8 map's time
(`python -m benchmarks.int8_scaling`); on an AVX-512 VNNI CPU oneDNN's eager scaling was a fifth
of the INT8 full model's time. `csrc/int8_rows.cpp` does each side in one pass per row, with the
eager arithmetic step for step, so those results are equal bit for bit.

Why the others: the FFN's GELU'd activations need never exist as a float tensor between two
INT8 maps (`gelu_quantize_rows`), torch's fused CPU attention is slow at BERT's small heads
(`attention`, `csrc/attention.cpp`), and a dropping layer's ranking was five small tensor ops
(`attention_received`). They compute their own erf or exp, so they match torch's ops
to float rounding, not bit for bit: an INT8 value on a .5 tie may round the other way (a token
ranked on a tie at the cut may be kept the other way), and the
fronts' F1 was re-scored with them (`python -m benchmarks.fused_kernels` times both against torch).

The build needs a C++ compiler and ninja and takes about 40 s on 2 cores, once per machine and
source (under dynaqa/ in torch's extension folder: `TORCH_EXTENSIONS_DIR`, default
~/.cache/torch_extensions); the image builds it at image build time. Without a compiler, or with
`DYNAQA_NATIVE=off`, the eager ops and torch's attention run instead (a failed build logs one
warning).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = tuple(CSRC / name for name in ("module.cpp", "int8_rows.cpp", "attention.cpp"))
HEADERS = tuple(CSRC / name for name in ("kernels.h", "fast_math.h"))
NATIVE_ENV = "DYNAQA_NATIVE"  # "off" runs the eager ops
# -ffp-contract=off: no fused multiply-add, so the C++ rounds exactly as the eager ops do. No
# -march: an image built on one x86 machine must run on any; the hot loops carry their own AVX-512
# and AVX2 clones, picked when the library loads.
CFLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]
_eager = False  # set by `eager()`
_unfused = False  # set by `without_fusions()`


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run the eager ops inside the block: how a benchmark times both ways in one process."""
    global _eager
    before, _eager = _eager, True
    try:
        yield
    finally:
        _eager = before


@contextlib.contextmanager
def without_fusions() -> Iterator[None]:
    """Inside the block attention and the FFN's GELU run as torch's ops, while the INT8 scaling
    stays fused (it is bit-exact either way): how a benchmark weighs those two, or the scaling
    alone with equal logits both ways."""
    global _unfused
    before, _unfused = _unfused, True
    try:
        yield
    finally:
        _unfused = before


def _module() -> ModuleType | None:
    """The compiled module, unless inside `eager()` or while TorchInductor traces a layer step
    (`DYNAQA_COMPILE`): there the eager ops trace into the compiled graph, where a pybind call
    would break it."""
    return None if _eager or torch.compiler.is_compiling() else kernels()


def build_name() -> str:
    """The module's name: a digest of the sources, the flags, torch's version and Python's extension
    suffix, so a changed source, another torch or another Python gets a build of its own instead of
    a stale (or ABI-foreign) one."""
    key = [" ".join(CFLAGS), torch.__version__, sysconfig.get_config_var("EXT_SUFFIX") or ""]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS)) + "|".join(key).encode())
    return f"dynaqa_kernels_{digest.hexdigest()[:12]}"


def build_folder() -> Path:
    """Where builds live: `TORCH_EXTENSIONS_DIR` (as torch's own), default ~/.cache/torch_extensions."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "dynaqa"


@functools.cache
def kernels() -> ModuleType | None:
    """The compiled module, or None where it is switched off or cannot be built (logged once).

    A finished build is imported directly: torch's loader would take a lock file in the build
    folder and run ninja on every process start, which a read-only container file system (the
    image builds this at image build time) refuses.
    """
    if os.environ.get(NATIVE_ENV, "auto").lower() in {"off", "0", "false"}:
        return None
    name = build_name()
    folder = build_folder() / name
    library = folder / f"{name}.so"
    began = time.perf_counter()
    try:
        module = _import(name, library) if library.is_file() else None
    except Exception:  # noqa: BLE001 - a broken or half-written build: let torch's loader (with its lock) redo it
        module = None
    try:
        if module is None:
            from torch.utils.cpp_extension import load

            folder.mkdir(parents=True, exist_ok=True)
            module = load(
                name=name,
                sources=[str(path) for path in SOURCES],
                extra_cflags=CFLAGS,
                extra_ldflags=["-fopenmp"],
                build_directory=str(folder),
            )
    except Exception as exc:  # noqa: BLE001 - any build or load failure means: run the eager ops
        log.warning(json.dumps({"event": "native kernels unavailable, running eager", "error": str(exc)[:500]}))
        return None
    log.info(json.dumps({"event": "native kernels loaded", "seconds": round(time.perf_counter() - began, 1)}))
    return module


def _import(name: str, library: Path) -> ModuleType:
    """A finished build, imported as it is."""
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"{library} is not an importable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scale_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """rows (m, k) float32 -> (each row / its max |x|, those maxes (m, 1)); a zero row's max is 1e-12."""
    module = _module()
    if module is not None and rows.dtype == torch.float32:
        return module.scale_rows(rows.contiguous())
    amax = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12)  # 10x faster than vector_norm(inf)
    # Multiply by the reciprocal: a broadcast division is up to 10x slower on this CPU.
    return rows * amax.reciprocal(), amax


def unscale_rows_(y: Tensor, amax: Tensor, bias: Tensor) -> Tensor:
    """In place: y (m, n) * amax (m, 1) + bias (n,), multiply then add (two roundings, no FMA)."""
    module = _module()
    if module is not None and all(t.is_contiguous() and t.dtype == torch.float32 for t in (y, amax, bias)):
        return module.unscale_rows_(y, amax, bias)
    return y.mul_(amax).add_(bias)  # addcmul: 2x slower


def quantize_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """rows (m, k) float32 -> (round(row * 127 / max |row|) as int8, those maxes (m, 1))."""
    module = _module()
    if module is not None and rows.dtype == torch.float32:
        return module.quantize_rows(rows.contiguous())
    amax = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12)
    # Multiply by 127 / amax rather than divide by amax / 127: the broadcast division is up to
    # 10x slower on an AVX2 CPU for (384, 1536) inputs.
    return rows.mul(127 / amax).round_().to(torch.int8), amax


def dequantize_rows(acc: Tensor, amax: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """acc (m, n) int32 -> float32 acc * (amax / 127) * scale + bias, multiplying left to right."""
    module = _module()
    if (
        module is not None
        and acc.dtype == torch.int32
        and all(t.is_contiguous() and t.dtype == torch.float32 for t in (amax, scale, bias))
    ):
        return module.dequantize_rows(acc.contiguous(), amax, scale, bias)
    return acc.float().mul_(amax * (1 / 127)).mul_(scale).add_(bias)


@functools.cache
def attention_runs(head_size: int) -> bool:
    """Whether `attention` has a kernel for this head size on this CPU (AVX-512; 32 or 64)."""
    module = kernels()
    return module is not None and module.fast_attention(head_size)


def _attention_module(q: Tensor, k: Tensor, bias: Tensor | None) -> ModuleType | None:
    """The compiled module where the attention kernels take these inputs, else None."""
    module = None if _unfused else _module()
    if module is None or q.dtype != torch.float32 or q.device.type != "cpu" or not attention_runs(q.shape[-1]):
        return None
    if bias is not None and bias.shape != (q.shape[0], 1, 1, k.shape[-2]):
        return None  # a per-query or per-head mask: torch's kernel takes any broadcastable shape
    return module


def _flat_bias(bias: Tensor | None) -> Tensor:
    return bias.reshape(bias.shape[0], -1).contiguous() if bias is not None else _NONE


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, slots: Tensor | None = None) -> Tensor | None:
    """softmax(q k^T / sqrt(head size) + bias) v for inference, as (batch, queries, heads, head
    size), the layout the output map reads; None where this CPU or head size has no kernel (AVX-512,
    heads of 32 or 64), the tensors are not float32 on the CPU, the bias is not one row per example,
    the build is off, or TorchInductor traces: the caller runs torch's.

    q (batch, heads, queries, head size), k and v (batch, heads, keys, head size), unit stride in
    the head size; bias (batch, 1, 1, keys) additive, or None; slots (batch, kept) int64: only the
    queries at those rows attend (a dropping layer's kept tokens, read in place rather than
    gathered first). Alone, torch's fused CPU kernel took 1.4-1.7x this one's time at heads of 32
    (docs/journal/fused-kernels.md); in the model, see `python -m benchmarks.fused_kernels`. The two
    agree within 1e-5 (tested)."""
    module = _attention_module(q, k, bias)
    if module is None:
        return None
    picked = slots.contiguous() if slots is not None else _NONE
    return module.attend(q, k, v, _flat_bias(bias), picked, 1 / math.sqrt(q.shape[-1]))


def attention_received(q: Tensor, k: Tensor, bias: Tensor | None, counted: Tensor | None) -> Tensor | None:
    """Drop-and-Restore's ranking in one pass: the attention each key receives from the queries `q`
    (batch, heads, n, head size; a strided view is read in place), summed over heads and over the
    queries `counted` (batch, n) bool marks (None: all), as (batch, keys). None where `attention`
    would be None. Eagerly the same sum is five tensor ops and a (batch, heads, n, keys) tensor,
    about a tenth of a dropping INT8 layer at 180 tokens; it matches them to float rounding."""
    module = _attention_module(q, k, bias)
    if module is None:
        return None
    flags = counted.contiguous() if counted is not None else _NONE
    return module.received(q, k, _flat_bias(bias), flags, 1 / math.sqrt(q.shape[-1]))


_NONE = torch.empty(0)  # an absent optional tensor, as the C++ takes it


def gelu_quantize_rows(acc: Tensor, amax: Tensor, scale: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The FFN's middle: GELU of `dequantize_rows(acc, amax, scale, bias)`, then `quantize_rows`.

    Fused, the (m, n) float activations never leave a row buffer; its GELU computes erf by
    Abramowitz and Stegun's 7.1.26 (as torch's vectorised erf does, within 1.5e-7), so it matches
    the eager ops to float rounding rather than bit for bit: a product that lands within that of a
    .5 step may round to the neighbouring integer."""
    module = None if _unfused else _module()
    if (
        module is not None
        and acc.dtype == torch.int32
        and all(t.is_contiguous() and t.dtype == torch.float32 for t in (amax, scale, bias))
    ):
        return module.gelu_quantize_rows(acc.contiguous(), amax, scale, bias)
    return quantize_rows(torch.nn.functional.gelu(dequantize_rows(acc, amax, scale, bias)))
