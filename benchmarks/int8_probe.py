"""Whether the start-up INT8 probe decides on a busy node as it does on an idle one.

The first replica of a hardware probes whether INT8 pays and which kernel to run, and the fleet
keeps its decision (`service.calibration.int8_decision`), so one misreading serves the wrong front
everywhere. Each reading here is the first probe of a fresh process, as a replica's start-up is
(`models.infer.quantize.measure_speedups`), at each `--threads` count; each round takes them idle,
then while `--busy` processes spin on the CPU (default: one per core this process may use, what a
node running other pods looks like). Per condition and thread count: the spread of each kernel's
reading, and how many processes would have served INT8, on which kernel. The spinning processes
are stopped after each round, and stop by themselves when this process goes away.

Writes int8_probe.{md,json} under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.questions import RESULTS, write_report
from models.cli.options import positive_int
from models.hardware import cpu_model
from models.infer import native
from models.infer.quantize import MIN_INT8_SPEEDUP, PROBE_SHAPE, PROBE_THREADS, measure_speedups, served_kernel

MODULE = [sys.executable, "-m", "benchmarks.int8_probe"]
SPIN_UP_S = 0.3  # for the spinning processes to start before a busy reading


def spin(seconds: float) -> None:
    """Keep one core busy for `seconds`, or until the process that started this one is gone."""
    parent, end = os.getppid(), time.monotonic() + seconds
    while time.monotonic() < end and os.getppid() == parent:
        pass


def reading(threads: int) -> dict[str, float]:
    """One fresh process's first probe at `threads` threads: float / INT8 time per kernel."""
    done = subprocess.run(
        [*MODULE, "--child", str(threads)], stdout=subprocess.PIPE, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_round(threads: list[int], busy: int, max_seconds: float) -> list[dict[str, Any]]:
    """Each thread count's reading idle, then with `busy` spinning processes."""
    rows = [{"busy": 0, "threads": n, "speedups": reading(n)} for n in threads]
    spinners: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(busy):  # one at a time, so those started before a failing start are stopped too
            spinners.append(subprocess.Popen([*MODULE, "--spin", str(max_seconds)]))
        time.sleep(SPIN_UP_S)
        for n in threads:
            if any(s.poll() is not None for s in spinners):
                raise RuntimeError("a spinning process stopped before its readings were done: raise --max-seconds")
            rows.append({"busy": busy, "threads": n, "speedups": reading(n)})
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (busy, threads): each kernel's readings, and the decisions they would make."""
    groups: dict[tuple[int, int], list[dict[str, float]]] = {}
    for row in rows:
        groups.setdefault((row["busy"], row["threads"]), []).append(row["speedups"])
    out = []
    for (busy, threads), group in sorted(groups.items()):
        kernels = {k: sorted(s[k] for s in group) for k in group[0]}
        decisions = Counter(served_kernel(s) or "float" for s in group)  # type: ignore[arg-type]
        out.append({"busy": busy, "threads": threads, "readings": kernels, "serves": dict(decisions)})
    return out


def markdown(groups: list[dict[str, Any]], cpu: str) -> str:
    kernels = list(groups[0]["readings"])
    lines = [
        "# The INT8 probe on an idle and a busy node",
        "",
        f"{cpu}. Each reading is the first probe of a fresh process: float time / INT8 time of one "
        f"{'x'.join(map(str, PROBE_SHAPE))} map (tokens x in x out), fastest of interleaved rounds. A process "
        f"serves INT8 where its kernel reads at least {MIN_INT8_SPEEDUP}x. The probe itself runs on "
        f"{PROBE_THREADS} {'thread' if PROBE_THREADS == 1 else 'threads'}.",
        "",
        "| spinning processes | threads | "
        + " | ".join(f"{k}: min / median / max" for k in kernels)
        + " | would serve |",
        "|---:|---:|" + "---|" * len(kernels) + "---|",
    ]
    for g in groups:
        cells = [f"{min(r):.2f} / {statistics.median(r):.2f} / {max(r):.2f}" for r in g["readings"].values()]
        serves = ", ".join(f"{name} {count}" for name, count in sorted(g["serves"].items()))
        lines.append(f"| {g['busy']} | {g['threads']} | " + " | ".join(cells) + f" | {serves} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    p.add_argument("--processes", type=positive_int, default=8, help="rounds: fresh processes per condition and count")
    p.add_argument("--busy", type=positive_int, default=cores, help=f"spinning processes while busy (default {cores})")
    p.add_argument(
        "--threads",
        default=f"{PROBE_THREADS},{torch.get_num_threads()}",
        help="comma-separated thread counts to probe at (default: the probe's, then torch's default here)",
    )
    p.add_argument("--max-seconds", type=float, default=120, help="the longest a spinning process runs (120)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--child", type=positive_int, help=argparse.SUPPRESS)
    p.add_argument("--spin", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure_speedups(args.child)))
        return 0
    if args.spin is not None:
        spin(args.spin)
        return 0
    try:
        threads = sorted({positive_int(t) for t in args.threads.split(",")})
    except argparse.ArgumentTypeError as exc:
        p.error(f"--threads: {exc}")
    native.kernels()  # built here if it must be, not inside a timed child
    rows: list[dict[str, Any]] = []
    for _ in tqdm(range(args.processes), desc="rounds", unit="round"):
        rows += one_round(threads, args.busy, args.max_seconds)
    groups = summary(rows)
    cpu = cpu_model()
    write_report(
        args.out, "int8_probe", {"cpu": cpu, "busy": args.busy, "rows": rows, "groups": groups}, markdown(groups, cpu)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
