"""INT8 linear maps: every kernel this torch has keeps per-token, per-row precision and answers a
token the same whatever else is in its call; the probe picks the kernel that pays."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from models.infer import native, quantize

KERNELS = quantize.available_kernels()  # oneDNN always; FBGEMM where this torch has it (x86)


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_is_close_to_the_float_map(kernel: quantize.Int8Kernel) -> None:
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 1536, generator=g) * 0.05, torch.randn(96, generator=g)
    x = torch.randn(7, 2, 1536, generator=g)
    with torch.inference_mode():
        y = quantize.int8_linear(weight, bias, kernel)(x)
    exact = x @ weight.T + bias
    assert y.shape == exact.shape and y.dtype == torch.float32
    assert float((y - exact).abs().max() / exact.abs().max()) < 0.03


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_kernel_scales_per_token_and_per_row(kernel: quantize.Int8Kernel) -> None:
    """A token 1000x quieter than its neighbour, and an output row 1000x smaller than the next,
    keep their precision (one scale per call or per matrix would round them to zero); and a
    token's result does not change with the rest of the call, bit for bit."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(64, 256, generator=g)
    weight[1] *= 1e-3
    linear = quantize.int8_linear(weight, torch.zeros(64), kernel)
    x = torch.randn(8, 256, generator=g)
    x[1] *= 1e-3
    with torch.inference_mode():
        together = linear(x)
        louder = linear(torch.cat([x[:2], 100 * x[2:]]))
        alone = linear(x[1:2])
    exact = x @ weight.T
    relative = (together - exact).abs() / exact.abs().amax(dim=1, keepdim=True)
    assert float(relative.max()) < 0.05
    small_row = (together[:, 1] - exact[:, 1]).abs().max() / exact[:, 1].abs().max()
    assert float(small_row) < 0.05
    assert torch.equal(together[:2], louder[:2]) and torch.equal(together[1:2], alone)


def test_the_probe_prefers_onednn_where_it_pays_else_fbgemm() -> None:
    """oneDNN's kernel where it pays (the VNNI front was measured on it), FBGEMM where oneDNN's is
    a reference loop (AVX2), oneDNN where FBGEMM is absent (INT8 is then off in `auto`)."""
    assert quantize.pick_kernel({"onednn": 2.5, "fbgemm": 3.0}) == "onednn"
    assert quantize.pick_kernel({"onednn": 0.03, "fbgemm": 1.6}) == "fbgemm"
    assert quantize.pick_kernel({"onednn": 0.03}) == "onednn"
    assert quantize.served_kernel({"onednn": 0.03, "fbgemm": 1.6}) == "fbgemm"
    assert quantize.served_kernel({"onednn": 0.03, "fbgemm": 1.05}) is None
    assert quantize.served_kernel({"onednn": 0.03}) is None
    speedups = quantize.kernel_speedups()
    assert quantize.int8_speedup() == speedups[quantize.int8_kernel()]


def test_the_probe_times_one_core_and_gives_the_threads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads on a busy node read a 3.3x kernel at 0.6x (benchmarks/int8_probe.py); the probe
    runs on `PROBE_THREADS` whatever the process serves with, and leaves that count as it was, also
    when a timed run fails."""
    seen: list[int] = []
    serving = quantize.PROBE_THREADS + 1

    def linear(*args: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return F.linear(*args)

    def failing(*args: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a timed run failed")

    before = torch.get_num_threads()
    torch.set_num_threads(serving)
    try:
        monkeypatch.setattr(quantize, "F", SimpleNamespace(linear=linear))
        speedups = quantize._kernel_speedups.__wrapped__()  # a fresh measurement, not the cached one
        assert torch.get_num_threads() == serving
        monkeypatch.setattr(quantize, "F", SimpleNamespace(linear=failing))
        with pytest.raises(RuntimeError, match="a timed run failed"):
            quantize._kernel_speedups.__wrapped__()
        assert torch.get_num_threads() == serving
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {quantize.PROBE_THREADS}
    assert set(speedups) == set(KERNELS) and all(s > 0 for s in speedups.values())


def test_the_probe_interleaves_keeps_each_runs_fastest_round_and_drops_a_hopeless_kernel() -> None:
    """A run 200x slower than the first (oneDNN's reference loop on AVX2 is 40x) in every warm-up
    round is not timed past the warm-up; the others run every round, alternating. A run slowed in
    some rounds (a busy node preempting it) reads its fast rounds' time."""
    calls: list[str] = []

    def run(name: str, *seconds: float) -> Callable[[], None]:
        def step() -> None:
            calls.append(name)
            time.sleep(seconds[calls.count(name) % len(seconds)])

        return step

    runs = {"float": run("float", 0.001), "slow": run("slow", 0.2), "bumpy": run("bumpy", 0.001, 0.03)}
    fastest = quantize._interleaved_fastest(runs, rounds=6, warmup=2)
    assert calls.count("slow") == 2 and calls.count("float") == calls.count("bumpy") == 8
    assert calls[-2:] == ["float", "bumpy"] and fastest["slow"] > 4 * fastest["float"]
    assert fastest["bumpy"] < 10 * fastest["float"]  # its slow rounds (30x) do not count


def test_the_native_scaling_builds_here_and_answers_as_the_eager_ops_bit_for_bit() -> None:
    """`models.infer.native` fuses FBGEMM's per-token scaling in C++; answers must not depend on whether
    it built (the shipped front's F1 was measured either way), so equal, not close."""
    if shutil.which("g++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja: the eager ops run (the fallback test covers them)")
    assert native.kernels() is not None  # a machine with g++ must get the fused path, not a silent fallback
    native.kernels.cache_clear()  # a new process: the finished build is imported as it is, not rebuilt
    module = native.kernels()
    assert module is not None and Path(module.__file__).parent == native.build_folder() / native.build_name()
    g = torch.Generator().manual_seed(3)
    rows = torch.randn(37, 288, generator=g)
    rows[5] = 0.0  # a zero row: its max is clamped, not divided by
    rows[7] *= 1e-6
    y, amax, bias = torch.randn(37, 96, generator=g), torch.rand(37, 1, generator=g), torch.randn(96, generator=g)
    fused_scaled, fused_amax = native.scale_rows(rows)
    fused_y = native.unscale_rows_(y.clone(), amax, bias)
    with native.eager():
        eager_scaled, eager_amax = native.scale_rows(rows)
        eager_y = native.unscale_rows_(y.clone(), amax, bias)
    assert torch.equal(fused_scaled, eager_scaled) and torch.equal(fused_amax, eager_amax)
    assert torch.equal(fused_y, eager_y) and fused_amax[5].item() == torch.tensor(1e-12).item()
    rows[9, 3] = float("nan")  # a NaN spoils its own token both ways, and no other
    fused_nan = native.scale_rows(rows)
    with native.eager():
        eager_nan = native.scale_rows(rows)
    for fused_part, eager_part in zip(fused_nan, eager_nan, strict=True):
        torch.testing.assert_close(fused_part, eager_part, rtol=0, atol=0, equal_nan=True)
    assert fused_nan[1][9].isnan().all() and not fused_nan[0][torch.arange(37) != 9].isnan().any()
    if "fbgemm" in KERNELS:
        linear = quantize.int8_linear(torch.randn(64, 288, generator=g) * 0.05, torch.randn(64, generator=g), "fbgemm")
        x = torch.randn(3, 37, 288, generator=g)
        with torch.inference_mode():
            fused = linear(x)
            with native.eager():
                assert torch.equal(fused, linear(x))


def test_without_the_native_build_the_eager_ops_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.NATIVE_ENV, "off")
    native.kernels.cache_clear()
    try:
        assert native.kernels() is None
        rows = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
        scaled, amax = native.scale_rows(rows)
        assert torch.equal(amax, torch.tensor([[4.0], [1e-12]])) and torch.equal(scaled[0], torch.tensor([0.75, -1.0]))
        y = native.unscale_rows_(torch.ones(2, 3), torch.tensor([[2.0], [3.0]]), torch.tensor([1.0, 0.0, -1.0]))
        assert torch.equal(y, torch.tensor([[3.0, 2.0, 1.0], [4.0, 3.0, 2.0]]))
    finally:
        native.kernels.cache_clear()  # the next caller builds (or loads the cached build) again


def test_the_native_onednn_scaling_answers_as_the_eager_ops_bit_for_bit() -> None:
    """oneDNN's per-token quantisation and the int32 products' scaling back, fused in C++: equal to
    the eager ops (the GELU and attention kernels are not: test_native_fusions)."""
    if native.kernels() is None:
        pytest.skip("no C++ build here: the eager ops run (the fallback test covers them)")
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(41, 384, generator=g) * 3
    rows[4] = 0.0
    rows[6, ::7] = 0.5 / 127 * rows[6].abs().max()  # ties at .5 steps: both round half to even
    acc = torch.randint(-(2**20), 2**20, (41, 96), generator=g, dtype=torch.int32)
    amax, scale, bias = torch.rand(41, 1, generator=g), torch.rand(96, generator=g) / 50, torch.randn(96, generator=g)
    fused_q, fused_amax = native.quantize_rows(rows)
    fused_y = native.dequantize_rows(acc, amax, scale, bias)
    with native.eager():
        eager_q, eager_amax = native.quantize_rows(rows)
        eager_y = native.dequantize_rows(acc, amax, scale, bias)
    assert fused_q.dtype == eager_q.dtype == torch.int8
    assert torch.equal(fused_q, eager_q) and torch.equal(fused_amax, eager_amax)
    assert torch.equal(fused_y, eager_y)
    # 127 / max as eager computes it (the reciprocal, then x 127): one rounding instead of two once sent
    # about 1 row in 1,000 of these to the other side of a .5 tie, and the largest floats further.
    many = torch.randn(20 * 384, 1536, generator=torch.Generator().manual_seed(1)) * 3
    many[:3, :3] = torch.tensor([[3e38, -3e38, 1.5e38], [3.4028235e38, 1.0, -4.02e36], [1e-39, -1e-40, 0.0]])
    fused_many = native.quantize_rows(many)
    with native.eager():
        eager_many = native.quantize_rows(many)
    assert all(torch.equal(f, e) for f, e in zip(fused_many, eager_many, strict=True))
    rows[9, 3], rows[11, 5] = float("nan"), float("inf")  # spoil their own tokens, and no other
    spoiled_q, spoiled_amax = native.quantize_rows(rows)
    assert spoiled_amax[9].isnan().all() and spoiled_amax[11].isinf().all() and not spoiled_q[9:12:2].any()
    others = torch.ones(41, dtype=torch.bool)
    others[[9, 11]] = False
    assert torch.equal(spoiled_q[others], fused_q[others]) and torch.equal(spoiled_amax[others], fused_amax[others])
    linear = quantize.int8_linear(torch.randn(64, 384, generator=g) * 0.05, torch.randn(64, generator=g), "onednn")
    x = torch.randn(2, 41, 384, generator=g)
    with torch.inference_mode():
        fused = linear(x)
        with native.eager():
            eager = linear(x)
    assert torch.equal(fused, eager)


def test_the_kernel_can_be_named_instead_of_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    for kernel in quantize.available_kernels():
        monkeypatch.setenv(quantize.KERNEL_ENV, kernel)
        assert quantize.int8_kernel() == kernel
    monkeypatch.setenv(quantize.KERNEL_ENV, "avx9000")
    with pytest.raises(ValueError, match="DYNAQA_INT8_KERNEL='avx9000'"):
        quantize.int8_kernel()
    monkeypatch.setenv(quantize.KERNEL_ENV, "auto")
    assert quantize.int8_kernel() in quantize.available_kernels()
