"""Does the thread that runs the model matter? Batch-1 latency under three thread arrangements.

The service computes on one model thread so the event loop never does. With libgomp (torch's
OpenMP on Linux), every thread that runs a parallel region gets a team of worker threads of its
own, and once the process holds more OpenMP threads than there are cores, workers stop spinning
between parallel regions and sleep; every region then pays a wake-up. Small sub-networks, INT8
above all (per-token quantise, integer matmul and rescale are many short regions), pay it most.

Arrangements, each in a fresh process (the teams a process has made cannot be unmade):
  main          load and time on the main thread (what `dynaqa search` measures)
  split         load on the main thread, time on a second thread (the service's earlier design:
                loading and calibration on worker threads, serving on the model thread)
  model-thread  load and time on one worker thread, the main thread never computes (the service now)

Each child times every sub-network on the first `--questions` eval questions, batch 1 at their real
length (every window of a question in one forward), after 3 untimed questions. The parent runs the
arrangements round-robin for `--rounds` rounds and reports the median per question, and the ratio
to `main`. Writes benchmarks/results/model_thread.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.questions import write_report
from models.data import squad
from models.infer.checkpoint import DEFAULT_DIR
from models.infer.checkpoint import load as load_checkpoint
from models.infer.reader import Reader

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "squad" / "eval.json.gz"
ARRANGEMENTS = ("main", "split", "model-thread")
SUBNETS = "w100d100,w100d100-q8,w75d100-q8,w50d100-q8,w25d100-q8,w50d50-q8,w25d50-q8"


def time_subnets(reader: Reader, subnet_ids: list[str], questions: int) -> dict[str, float]:
    """Mean seconds per question for each sub-network, timed on the calling thread."""
    examples = squad.load_squad(DATA, limit=questions)
    windows = [reader.windows([example]) for example in examples]
    results = {}
    for subnet_id in subnet_ids:
        subnet = reader.checkpoint.resolve(subnet_id)
        for w in windows[:3]:
            reader.logits(w, list(range(len(w))), subnet)
        began = time.perf_counter()
        for w in windows:
            reader.logits(w, list(range(len(w))), subnet)
        results[subnet_id] = (time.perf_counter() - began) / len(windows)
    return results


def child(arrangement: str, checkpoint: str, subnet_ids: list[str], questions: int, threads: int) -> dict[str, float]:
    """One arrangement's timings, in this (fresh) process."""

    def load() -> Reader:
        torch.set_num_threads(threads)
        return Reader(load_checkpoint(checkpoint))

    def on_worker(fn: Callable[[], dict[str, float]]) -> dict[str, float]:
        with ThreadPoolExecutor(max_workers=1) as worker:  # a worker's exception re-raises here
            return worker.submit(fn).result()

    if arrangement == "main":
        return time_subnets(load(), subnet_ids, questions)
    if arrangement == "split":
        reader = load()
        return on_worker(lambda: time_subnets(reader, subnet_ids, questions))
    return on_worker(lambda: time_subnets(load(), subnet_ids, questions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_DIR))
    parser.add_argument("--subnets", default=SUBNETS, help="comma-separated sub-network ids (profile ids work)")
    parser.add_argument("--questions", type=int, default=60, help="eval questions per measurement (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds; the median is kept (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, the service's)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", choices=ARRANGEMENTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    subnet_ids = args.subnets.split(",")
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint, subnet_ids, args.questions, args.threads)))
        return 0
    samples: dict[str, dict[str, list[float]]] = {a: {s: [] for s in subnet_ids} for a in ARRANGEMENTS}
    for round_ in range(args.rounds):
        for arrangement in ARRANGEMENTS:
            print(f"round {round_ + 1}/{args.rounds}: {arrangement} ...", file=sys.stderr, flush=True)
            command = [sys.executable, "-m", "benchmarks.model_thread", "--child", arrangement]
            command += ["--checkpoint", args.checkpoint, "--subnets", args.subnets]
            command += ["--questions", str(args.questions), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"error: the {arrangement} child failed:\n{done.stderr[-3000:]}")
            for subnet_id, seconds in json.loads(done.stdout.splitlines()[-1]).items():
                samples[arrangement][subnet_id].append(seconds)
    median_ms = {a: {s: statistics.median(v) * 1000 for s, v in by.items()} for a, by in samples.items()}
    report = {
        "checkpoint": args.checkpoint,
        "questions": args.questions,
        "rounds": args.rounds,
        "threads": args.threads,
        # What the result depends on besides the arrangement: the core count (throttled spinning
        # starts when OpenMP threads outnumber cores) and libgomp's wait settings.
        "cores": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "default"),
        "median_ms_per_question": {a: {s: round(ms, 2) for s, ms in by.items()} for a, by in median_ms.items()},
    }
    lines = [
        f"Batch-1 latency per question (first {args.questions} eval questions, median of {args.rounds} rounds, "
        f"{args.threads} torch threads, {os.cpu_count()} cores, OMP_WAIT_POLICY "
        f"{report['omp_wait_policy']}); in brackets: time / `main`.",
        "",
        "| sub-network | " + " | ".join(ARRANGEMENTS) + " |",
        "|---|" + "---:|" * len(ARRANGEMENTS),
    ]
    for subnet_id in subnet_ids:
        base = median_ms["main"][subnet_id]
        cells = [f"{median_ms[a][subnet_id]:.2f} ms ({median_ms[a][subnet_id] / base:.2f}x)" for a in ARRANGEMENTS]
        lines.append(f"| `{subnet_id}` | " + " | ".join(cells) + " |")
    write_report(args.out, "model_thread", report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
