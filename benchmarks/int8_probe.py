"""Whether the start-up INT8 probe decides on a busy node as it does on an idle one.

The first replica of a hardware probes whether INT8 pays and which kernel to run, and the fleet
keeps its decision (`service.calibration.int8_decision`), so one misreading serves the wrong front
everywhere. Each reading here is the first probe of a fresh process, as a replica's start-up is
(`models.infer.quantize.measure_speedups`), at each `--threads` count: idle, then while `--busy`
processes spin on the CPU (default: one per core, what a node running other pods looks like). Per
condition and thread count: the spread of each kernel's reading, and how many processes would have
served INT8, on which kernel. The spinning processes stop when the readings are done (and by
themselves after `--max-seconds`).

Writes int8_probe.{md,json} under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.questions import RESULTS, write_report
from models.hardware import cpu_model
from models.infer.quantize import MIN_INT8_SPEEDUP, PROBE_SHAPE, PROBE_THREADS, pick_kernel

READING = (
    "import json, sys; from models.infer.quantize import measure_speedups as m; print(json.dumps(m(int(sys.argv[1]))))"
)
SPIN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"


def reading(threads: int) -> dict[str, float]:
    """One fresh process's first probe at `threads` threads: float / INT8 time per kernel."""
    done = subprocess.run(
        [sys.executable, "-c", READING, str(threads)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def readings(threads: list[int], processes: int, busy: int, max_seconds: float) -> list[dict[str, Any]]:
    """`processes` readings per thread count (alternating counts), with `busy` spinning processes."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN, str(max_seconds)]) for _ in range(busy)]
    try:
        rows = []
        for i in tqdm(range(processes * len(threads)), desc=f"{busy} busy", unit="process"):
            n = threads[i % len(threads)]
            rows.append({"busy": busy, "threads": n, "speedups": reading(n)})
        return rows
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (busy, threads): each kernel's readings, and the decisions they would make."""
    groups: dict[tuple[int, int], list[dict[str, float]]] = {}
    for row in rows:
        groups.setdefault((row["busy"], row["threads"]), []).append(row["speedups"])
    out = []
    for (busy, threads), group in groups.items():
        kernels = {k: sorted(s[k] for s in group) for k in group[0]}
        decisions = Counter(
            pick_kernel(s) if s[pick_kernel(s)] >= MIN_INT8_SPEEDUP else "float"  # type: ignore[arg-type]
            for s in group
        )
        out.append({"busy": busy, "threads": threads, "readings": kernels, "serves": dict(decisions)})
    return out


def markdown(groups: list[dict[str, Any]], cpu: str) -> str:
    kernels = list(groups[0]["readings"])
    lines = [
        "# The INT8 probe on an idle and a busy node",
        "",
        f"{cpu}. Each reading is the first probe of a fresh process (float time / INT8 time of one "
        f"{'x'.join(map(str, PROBE_SHAPE))} map (tokens x in x out), interleaved medians); a process serves "
        f"INT8 where its kernel reads at least {MIN_INT8_SPEEDUP}x. The probe runs on {PROBE_THREADS} thread(s).",
        "",
        "| spinning processes | threads | "
        + " | ".join(f"{k}: min / median / max" for k in kernels)
        + " | would serve |",
        "|---:|---:|" + "---|" * len(kernels) + "---|",
    ]
    for g in groups:
        cells = []
        for k in kernels:
            r = g["readings"][k]
            cells.append(f"{r[0]:.2f} / {statistics.median(r):.2f} / {r[-1]:.2f}")
        serves = ", ".join(f"{name} {count}" for name, count in sorted(g["serves"].items()))
        lines.append(f"| {g['busy']} | {g['threads']} | " + " | ".join(cells) + f" | {serves} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    p.add_argument("--processes", type=int, default=8, help="fresh processes per condition and thread count (8)")
    p.add_argument(
        "--busy", type=int, default=cores, help=f"spinning processes while busy (default: {cores}, one per core)"
    )
    p.add_argument(
        "--threads",
        default=f"{PROBE_THREADS},{torch.get_num_threads()}",
        help="comma-separated thread counts to probe at (default: the probe's, then torch's default here)",
    )
    p.add_argument("--max-seconds", type=float, default=600, help="the spinning processes stop by then at the latest")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    threads = sorted({int(t) for t in args.threads.split(",")})
    rows = readings(threads, args.processes, 0, args.max_seconds) + readings(
        threads, args.processes, args.busy, args.max_seconds
    )
    cpu = cpu_model()
    groups = summary(rows)
    write_report(args.out, "int8_probe", {"cpu": cpu, "rows": rows, "groups": groups}, markdown(groups, cpu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
