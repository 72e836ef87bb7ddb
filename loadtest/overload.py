"""Overload: offer many times the full model's capacity for a while, then check recovery.

Measures the full model's single-stream capacity (1 / p50 latency, loose budget, sequential),
offers `--factor` times that as an open loop for `--seconds`, sampling the server's RSS and queue
depth, then waits for the degradation level to return to 0 and checks a loose-budget request is
served by the full model again. Reports statuses, the p99 latency of refusals, peak RSS and the
highest queue depth seen. Used by tests/system/test_reliability.py and runnable on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from loadtest import openloop
from loadtest.processes import HttpProcess, Server, free_port, split_cores
from loadtest.report import percentile
from models.data import squad

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "squad" / "eval.json.gz"


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def metric(client: httpx.Client, url: str, name: str) -> float:
    """One value from /metrics (through `client`: `httpx.get` costs 20 ms of CPU a call)."""
    for line in client.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return float("nan")


def server_quantile_ms(url: str, outcome: str, q: float) -> float | None:
    """Upper bucket edge (ms) under which a share `q` of `outcome` requests were answered."""
    buckets = []
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("dynaqa_request_duration_seconds_bucket{") and f'outcome="{outcome}"' in line:
            edge = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if edge == "+Inf" else float(edge), float(line.split()[-1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(1000 * edge for edge, count in buckets if count >= q * total)


def capacity_rps(url: str, examples: list[squad.SquadExample]) -> float:
    """The full model's single-stream capacity: 1 / p50 latency of 20 loose-budget questions in a row."""
    with httpx.Client(timeout=60) as client:
        latencies = []
        for example in examples[:20]:
            r = client.post(
                url + "/v1/qa",
                json={"question": example.question, "context": example.context},
                headers={"X-Latency-Budget-Ms": "20000"},
            )
            latencies.append(r.json()["latency_ms"])
    return 1000.0 / statistics.median(latencies)


@contextlib.contextmanager
def sampled(url: str, pid: int) -> Iterator[list[tuple[int, float]]]:
    """(RSS KiB, queue depth) of the server every 0.25 s on a thread, for as long as the block runs."""
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                try:
                    samples.append((rss_kib(pid), metric(client, url, "dynaqa_queue_depth")))
                except (httpx.HTTPError, OSError):
                    pass  # a /metrics call that times out under 10x load is skipped, not fatal
                time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


def seconds_to_level_0(url: str, limit_s: float = 60.0) -> float:
    """How long the degradation level took to return to 0 (at most `limit_s`)."""
    began = time.perf_counter()
    with httpx.Client() as client:
        while metric(client, url, "dynaqa_degradation_level") > 0 and time.perf_counter() - began < limit_s:
            time.sleep(0.5)
    return time.perf_counter() - began


def measure(
    url: str,
    pid: int,
    factor: float = 10.0,
    seconds: float = 30.0,
    budget_ms: float = 1000.0,
    max_rps: float | None = None,
) -> dict:
    """`factor` x the full model's capacity, offered open loop; at most `max_rps` where the
    generator shares the server's cores (a test), so the refused flood is the server's, not a
    backlog in the generator's own connection pools."""
    examples = squad.load_squad(DATA, limit=300)
    capacity = capacity_rps(url, examples)
    offered = min(capacity * factor, max_rps or float("inf"))
    rss_before = rss_kib(pid)
    with sampled(url, pid) as samples:
        records = asyncio.run(openloop.run(url, examples, offered, seconds, lambda rng: budget_ms))
    refused = [r for r in records if r.status == 503]
    recovery_s = seconds_to_level_0(url)
    check = httpx.post(
        url + "/v1/qa",
        json={"question": examples[0].question, "context": examples[0].context},
        headers={"X-Latency-Budget-Ms": "20000"},
        timeout=60,
    ).json()
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    for r in records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "capacity_full_model_rps": round(capacity, 2),
        "offered_rps": round(offered, 2),
        "seconds": seconds,
        "requests": len(records),
        "statuses": statuses,
        "client_errors": errors,
        "refusals_with_retry_after": sum("retry-after" in r.headers for r in refused),
        # Server-side, from the histogram (arrival to response): the client shares two cores with
        # the server at this rate, so its own clock mostly measures its own backlog.
        "refusal_ms_p99_at_most": server_quantile_ms(url, "shed", 0.99),
        "client_latency_ms_p50_refusals": percentile([1000 * r.latency_s for r in refused], 0.5),
        "client_latency_ms_p99_refusals": percentile([1000 * r.latency_s for r in refused], 0.99),
        "rss_mib_before": round(rss_before / 1024, 1),
        "rss_mib_peak": round(max((s[0] for s in samples), default=rss_before) / 1024, 1),
        "queue_depth_max_seen": max((s[1] for s in samples), default=float("nan")),
        "recovery_seconds_to_level_0": round(recovery_s, 1),
        "after_recovery_subnet": check["subnet"]["id"],
        "process_alive": Path(f"/proc/{pid}").exists(),
    }


def generator_floor(rate: float, seconds: float, cpus: set[int] | None, tmp: Path) -> dict[str, float | None]:
    """Client-side latency of the same open loop against loadtest/noop.py, which refuses every
    request at once on the server's cores: what the generator and HTTP stack add by themselves."""
    port = free_port()
    noop = HttpProcess([sys.executable, "-m", "loadtest.noop", "--port", str(port)], port, tmp / "noop.log", cpus=cpus)
    try:
        noop.wait_ready(timeout=30)
        examples = squad.load_squad(DATA, limit=300)
        records = asyncio.run(openloop.run(noop.url, examples, rate, seconds, lambda rng: 1000.0))
    finally:
        noop.stop()
    latencies = [1000 * r.latency_s for r in records if r.status == 503]
    return {"requests": len(records), "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def main(argv: list[str] | None = None) -> int:
    from models.infer import checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(checkpoint.DEFAULT_DIR))
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument(
        "--split-cores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to all cores but the last (one torch thread per server core) and this "
        "load generator to the last, so refusal latency is the server's, not the generator's backlog",
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "overload.json"))
    args = parser.parse_args(argv)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="dynaqa-overload-"))
    cores = sorted(os.sched_getaffinity(0))
    server_cores = split_cores() if args.split_cores else None
    pinning: dict[str, object] = {"cpus": server_cores, "threads": len(server_cores)} if server_cores else {}
    server = Server(
        Path(args.checkpoint), tmp / "log.jsonl", cache_dir=tmp / "cache", max_queue=args.max_queue, **pinning
    )
    try:
        server.wait_ready()
        report = measure(server.url, server.process.pid, args.factor, args.seconds)
        report["max_queue"] = args.max_queue
        report["server_cores"] = sorted(server_cores or cores)
        report["client_cores"] = sorted(os.sched_getaffinity(0))
    finally:
        server.stop()
    report["generator_floor"] = generator_floor(report["offered_rps"], args.seconds, server_cores, tmp)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
