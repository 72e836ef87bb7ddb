"""Service benchmark: start-up, per-request overhead, and budgets the full model cannot meet.

Starts a real redis-server and two real `dynaqa serve` replicas on loopback, then measures:
  1. calibration time of the first replica, how many of its points were disturbed (spread over 20%
     of the mean), and whether the second (same Redis) calibrates at all;
  2. at no load, server latency minus model forward time (from Server-Timing), p50 and p95,
     over sequential eval-split questions with a loose budget (the full model answers);
  3. with a budget of `--budget-fraction` of the full model's p50 latency, 200 sequential requests
     (lenient): the share that met the budget and the F1 of what was served, next to the full
     model's F1 on the same questions.
Writes loadtest/results/service_bench.json and .md. Bounded: a fixed number of requests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from loadtest.processes import Redis, Server
from models.data import metric, squad
from models.infer import checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "squad" / "eval.json.gz"


def model_ms(response: httpx.Response) -> float:
    timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    return float(timing["model"])


def noisy_calibration_points(cache_dir: Path, share: float = 0.2) -> tuple[int, int]:
    """(points whose spread exceeds `share` of their mean, all points) in a replica's calibration.

    A point disturbed while it was timed (another process taking a core) gets a large spread, and
    the planner's tails (mean + 3 sigma) then rule that sub-network out at that size.
    """
    rows = [
        row
        for path in cache_dir.glob("latency-*.json")
        for table in json.loads(path.read_text())["points"].values()
        for row in table
    ]
    return sum(std > share * mean for _tokens, _batch, mean, std in rows), len(rows)


def run(server: Server, examples: list[squad.SquadExample], budget_ms: float) -> list[dict]:
    rows = []
    with httpx.Client(timeout=60) as client:
        for example in examples:
            began = time.perf_counter()
            response = client.post(
                server.url + "/v1/qa",
                json={"question": example.question, "context": example.context},
                headers={"X-Latency-Budget-Ms": f"{budget_ms:.1f}"},
            )
            client_ms = (time.perf_counter() - began) * 1000
            body = response.json()
            rows.append(
                {
                    "qid": example.qid,
                    "status": response.status_code,
                    "client_ms": client_ms,
                    "latency_ms": body["latency_ms"],
                    "model_ms": model_ms(response),
                    "answer": body["answer"],
                    "subnet": body["subnet"]["id"],
                    "budget_met": body["budget_met"],
                }
            )
    return rows


def start_up(path: Path, redis: Redis, tmp: Path, servers: list[Server]) -> dict[str, Any]:
    """Start one replica (it calibrates), then a second on the same Redis (it should find the
    first's profile) and stop that one again: how long each took and what the first calibrated.
    Each server started is in `servers` until stopped, for the caller to stop on an error."""
    began = time.perf_counter()
    first = Server(path, tmp / "first.jsonl", redis_url=redis.url, cache_dir=tmp / "c1")
    servers.append(first)
    first.wait_ready()
    first_ready_s = time.perf_counter() - began
    noisy, points = noisy_calibration_points(tmp / "c1")
    metrics = httpx.get(first.url + "/metrics").text
    calibration_s = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("dynaqa_calibration_seconds "))
    )
    began = time.perf_counter()
    second = Server(path, tmp / "second.jsonl", redis_url=redis.url, cache_dir=tmp / "c2")
    servers.append(second)
    second.wait_ready()
    second_ready_s = time.perf_counter() - began
    second_source = httpx.get(second.url + "/v2/health/ready").json()["calibration"]
    second.stop()
    servers.remove(second)
    return {
        "calibration_seconds_first_replica": round(calibration_s, 2),
        "ready_seconds_first_replica": round(first_ready_s, 2),
        "ready_seconds_second_replica": round(second_ready_s, 2),
        "second_replica_calibration": second_source,
        "calibration_points_spread_over_20pct": f"{noisy} of {points}",
    }


def under_budgets(server: Server, examples: list[squad.SquadExample], budget_fraction: float) -> dict[str, Any]:
    """The full model's overhead and latency at a loose budget, then what a budget of
    `budget_fraction` of its p50 gets: how often it is met, by which sub-networks, at what F1."""
    gold = {e.qid: e.answers for e in examples}
    print("full model, loose budget ...", file=sys.stderr)
    run(server, examples[:10], 20000)  # warm
    full = run(server, examples, 20000)
    overhead = [r["latency_ms"] - r["model_ms"] for r in full]
    full_p50 = statistics.median(r["latency_ms"] for r in full)
    tight_ms = budget_fraction * full_p50
    print(f"tight budget {tight_ms:.1f} ms ...", file=sys.stderr)
    tight = run(server, examples, tight_ms)
    f1 = {
        name: metric.score(gold, {r["qid"]: r["answer"] for r in rows})["f1"]
        for name, rows in (("full", full), ("tight", tight))
    }
    mix: dict[str, int] = {}
    for r in tight:
        mix[r["subnet"]] = mix.get(r["subnet"], 0) + 1
    return {
        "requests": len(examples),
        "overhead_ms_p50": round(statistics.median(overhead), 3),
        "overhead_ms_p95": round(sorted(overhead)[int(0.95 * len(overhead)) - 1], 3),
        "full_model_latency_ms_p50": round(full_p50, 2),
        "full_model_budget_met_at_tight": round(sum(r["latency_ms"] <= tight_ms for r in full) / len(full), 3),
        "tight_budget_ms": round(tight_ms, 2),
        "tight_budget_met": round(sum(r["budget_met"] for r in tight) / len(tight), 3),
        "tight_latency_ms_p50": round(statistics.median(r["latency_ms"] for r in tight), 2),
        "tight_subnet_mix": mix,
        "f1_full_model": round(f1["full"], 2),
        "f1_tight_budget": round(f1["tight"], 2),
        "statuses": sorted({r["status"] for r in full + tight}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(checkpoint.DEFAULT_DIR))
    parser.add_argument("--requests", type=int, default=200, help="questions per measurement (default 200)")
    parser.add_argument("--budget-fraction", type=float, default=0.6, help="tight budget / full-model p50")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    examples = squad.load_squad(DATA)[: args.requests]
    tmp = Path(tempfile.mkdtemp(prefix="dynaqa-bench-"))
    redis = Redis()
    servers: list[Server] = []
    try:
        startup = start_up(Path(args.checkpoint), redis, tmp, servers)
        report = {"checkpoint": args.checkpoint, **startup, **under_budgets(servers[0], examples, args.budget_fraction)}
    finally:
        for server in servers:
            server.stop()
        redis.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_bench.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report.items()]
    (out / "service_bench.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
