"""`benchmarks.int8_probe` against this CPU: the start-up probe decides on a busy CPU as on an idle one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import int8_probe
from models.infer.quantize import MIN_INT8_SPEEDUP, PROBE_THREADS, pick_kernel


@pytest.mark.slow
def test_a_busy_cpu_does_not_change_the_probes_decision(tmp_path: Path) -> None:
    """Fresh processes, as replicas start: two readings idle, two while every core spins. At two
    threads a busy 2-core VM read a 3.2x kernel at 0.67x in 2-6 of 8 such processes (serving float
    fleet-wide); the probe's one thread must not. Decided only where the idle readings are clear
    (the kernel at twice the threshold or more, or under half of it); in between, noise decides."""
    args = ["--processes", "2", "--threads", str(PROBE_THREADS), "--max-seconds", "120", "--out", str(tmp_path)]
    assert int8_probe.main(args) == 0
    rows = json.loads((tmp_path / "int8_probe.json").read_text())["rows"]
    idle = [r["speedups"] for r in rows if r["busy"] == 0]
    busy = [r["speedups"] for r in rows if r["busy"] > 0]
    assert len(idle) == len(busy) == 2 and {r["threads"] for r in rows} == {PROBE_THREADS}
    picked = [s[pick_kernel(s)] for s in idle]
    if not (min(picked) >= 2 * MIN_INT8_SPEEDUP or max(picked) < MIN_INT8_SPEEDUP / 2):
        pytest.skip(f"idle readings {picked} are too near the {MIN_INT8_SPEEDUP}x threshold to call")
    serves = {pick_kernel(s) if s[pick_kernel(s)] >= MIN_INT8_SPEEDUP else "float" for s in idle + busy}
    assert len(serves) == 1, f"idle {idle}, busy {busy}"
    assert f"| 0 | {PROBE_THREADS} |" in (tmp_path / "int8_probe.md").read_text()
