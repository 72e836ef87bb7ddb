"""Adaptive vs static serving under load: the scenarios of docs/design.md, "Load tests".

Five servers, one at a time, each on the same checkpoint and the same offered traffic:
  adaptive         `dynaqa serve` (the planner chooses per request)
  pinned-full      `dynaqa serve` pinned to w100d100
  pinned-smallest  `dynaqa serve` pinned to the fastest grid pair (w25d50)
  peer             FastAPI + transformers `pipeline("question-answering")` on the full model
  ort-peer         FastAPI + ONNX Runtime INT8 of the full model, dynamically batched (ort_peer.py)
Scenarios (open loop, Poisson arrivals, eval-split questions, every answer scored):
  sweep   offered load from 0.25x to 3x the full model's measured capacity
  burst   1x -> 3x -> 1x, with the degradation level sampled from /metrics
  mixed   1x load, budgets spread from half to eight times the full model's latency
A static server that met under 5% of budgets at one load is not offered the higher ones (recorded
as skipped): it only queues longer, and its backlog is what made the run take over 15 minutes.
Budgets are multiples of L, the full model's p50 latency on this machine, measured first.
Served F1 is compared with the full model on the same questions, answered offline (reference.py).
Results: loadtest/results/loadtest.json (every request), loadtest.md and PNG plots (report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from loadtest import openloop, reference
from loadtest.processes import HttpProcess, Server, free_port, split_cores
from models.data import metric, squad
from models.infer import checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "squad" / "eval.json.gz"
SERVERS = ("adaptive", "pinned-full", "pinned-smallest", "peer", "ort-peer")
PEERS = {"peer": "loadtest.peer", "ort-peer": "loadtest.ort_peer"}  # kind -> module
SWEEP = (0.25, 0.5, 1.0, 2.0, 3.0)
SWEEP_BUDGETS = (2.0, 3.0, 5.0)  # x L
MIXED_BUDGETS = (0.5, 1.0, 2.0, 4.0, 8.0)  # x L
BURST = ((1.0, 10.0), (3.0, 10.0), (1.0, 35.0))  # (x capacity, seconds)
MIXED_SECONDS = 15.0
GIVE_UP = 0.05  # a static server meeting fewer budgets than this is not offered higher loads


class Peer(HttpProcess):
    """A static peer (`PEERS`: transformers, or ONNX Runtime) in a subprocess."""

    def __init__(self, module: str, checkpoint_dir: Path, log_path: Path, cpus: set[int] | None = None) -> None:
        port = free_port()
        command = [sys.executable, "-m", module, "--checkpoint", str(checkpoint_dir), "--port", str(port)]
        super().__init__(command, port, log_path, cpus=cpus)


def start(kind: str, checkpoint_dir: Path, tmp: Path, cpus: set[int] | None) -> Server | Peer:
    """Start one of SERVERS on `cpus` (one torch thread per core) and wait until it is ready."""
    if kind in PEERS:
        server: Server | Peer = Peer(PEERS[kind], checkpoint_dir, tmp / f"{kind}.log", cpus)
    else:
        pin = {"pinned-full": "w100d100", "pinned-smallest": "w25d50"}.get(kind)
        settings: dict[str, object] = {"cache_dir": tmp / "cache", "max_queue": 64}
        if cpus:
            settings["threads"] = len(cpus)
        if pin:
            settings["pin_subnet"] = pin
        server = Server(checkpoint_dir, tmp / f"{kind}.jsonl", cpus, **settings)
    server.wait_ready()
    return server


def full_model_latency_ms(url: str, examples: list[squad.SquadExample]) -> float:
    with httpx.Client(timeout=60) as client:
        latencies = []
        for example in examples[:30]:
            began = time.perf_counter()
            client.post(
                url + "/v1/qa",
                json={"question": example.question, "context": example.context},
                headers={"X-Latency-Budget-Ms": "60000"},
            )
            latencies.append((time.perf_counter() - began) * 1000)
    return statistics.median(latencies[5:])


def capacity_rps(url: str, examples: list[squad.SquadExample], seconds: float = 10.0) -> float:
    """Completed requests per second under a saturating closed loop of 8 clients."""
    done = 0

    async def client_loop(client: httpx.AsyncClient, offset: int, end: float) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < end:
            example = examples[i % len(examples)]
            r = await client.post(
                url + "/v1/qa",
                json={"question": example.question, "context": example.context},
                headers={"X-Latency-Budget-Ms": "60000"},
            )
            done += r.status_code == 200
            i += 8

    async def run() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            end = time.perf_counter() + seconds
            await asyncio.gather(*(client_loop(client, k, end) for k in range(8)))

    asyncio.run(run())
    return done / seconds


def sample_levels(url: str, stop: threading.Event, began: float, out: list[tuple[float, float]]) -> None:
    with httpx.Client(timeout=1) as client:  # one client: `httpx.get` costs 20 ms of CPU a call
        while not stop.is_set():
            try:
                for line in client.get(url + "/metrics").text.splitlines():
                    if line.startswith("dynaqa_degradation_level "):
                        out.append((time.perf_counter() - began, float(line.split()[-1])))
            except httpx.HTTPError:
                pass
            time.sleep(0.25)


def score(records: list[openloop.Record], gold: dict[str, tuple[str, ...]]) -> list[dict]:
    rows = []
    for r in records:
        row = asdict(r)
        answer = r.body.get("answer") if r.status == 200 else None
        row["f1"] = max(metric.f1_score(answer, g) for g in gold[r.qid]) * 100 if answer is not None else None
        row["met"] = r.status == 200 and r.latency_s * 1000 <= r.budget_ms
        row["subnet"] = r.body.get("subnet", {}).get("id") if r.status == 200 else None
        del row["body"], row["headers"]
        rows.append(row)
    return rows


def gave_up(kind: str, rows: list[dict]) -> bool:
    """Whether a static server that met under GIVE_UP of `rows` (its last load) skips higher loads."""
    return kind != "adaptive" and bool(rows) and sum(r["met"] for r in rows) / len(rows) < GIVE_UP


def run_server(
    kind: str, url: str, examples: list, gold: dict, capacity: float, latency_ms: float, scale: float
) -> dict:
    """All scenarios against one server; `scale` shortens durations for smoke runs."""
    out: dict = {"sweep": {}, "burst": {}, "mixed": {}, "skipped": []}
    for factor in SWEEP:
        if gave_up(kind, list(out["sweep"].values())[-1] if out["sweep"] else []):
            out["skipped"].append(str(factor))
            continue
        records = asyncio.run(
            openloop.run(
                url,
                examples,
                capacity * factor,
                15 * scale,
                lambda rng: latency_ms * rng.choice(SWEEP_BUDGETS),
                seed=int(factor * 100),
            )
        )
        out["sweep"][str(factor)] = score(records, gold)
    levels: list[tuple[float, float]] = []
    stop = threading.Event()
    began = time.perf_counter()
    sampler = threading.Thread(target=sample_levels, args=(url, stop, began, levels), daemon=True)
    if kind not in PEERS:
        sampler.start()
    phases = []
    for factor, seconds in BURST:
        offset = time.perf_counter() - began
        records = asyncio.run(
            openloop.run(
                url,
                examples,
                capacity * factor,
                seconds * scale,
                lambda rng: latency_ms * rng.choice(SWEEP_BUDGETS),
                seed=7,
            )
        )
        for r in records:
            r.sent_at += offset
        phases.append({"factor": factor, "start_s": offset, "records": score(records, gold)})
    stop.set()
    out["burst"] = {"phases": phases, "levels": levels}
    records = asyncio.run(
        openloop.run(
            url, examples, capacity, MIXED_SECONDS * scale, lambda rng: latency_ms * rng.choice(MIXED_BUDGETS), seed=11
        )
    )
    out["mixed"] = score(records, gold)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(checkpoint.DEFAULT_DIR))
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration (0.2 for a smoke run)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--split-cores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run every server on all cores but the last and this load generator on the last, so "
        "latency is the server's, not the generator's backlog",
    )
    args = parser.parse_args(argv)
    cpus = split_cores() if args.split_cores else None
    examples = squad.load_squad(DATA)
    gold = {e.qid: e.answers for e in examples}
    tmp = Path(tempfile.mkdtemp(prefix="dynaqa-loadtest-"))
    ckpt = Path(args.checkpoint)
    began = time.perf_counter()
    probe = start("pinned-full", ckpt, tmp, cpus)
    try:
        latency_ms = full_model_latency_ms(probe.url, examples)
        capacity = capacity_rps(probe.url, examples, 10 * args.scale)
    finally:
        probe.stop()
    print(json.dumps({"full_model_latency_ms": latency_ms, "capacity_rps": capacity}), file=sys.stderr)
    results = {
        "full_model_latency_ms": latency_ms,
        "capacity_rps": capacity,
        "server_cores": sorted(cpus) if cpus else "shared with the generator",
        "servers": {},
    }
    for kind in args.servers.split(","):
        print(f"{kind} ...", file=sys.stderr)
        server = start(kind, ckpt, tmp, cpus)
        try:
            results["servers"][kind] = run_server(kind, server.url, examples, gold, capacity, latency_ms, args.scale)
        finally:
            server.stop()
    reference.add(results, ckpt, examples)  # the full model on the same questions, offline
    results["seconds"] = round(time.perf_counter() - began, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loadtest.json").write_text(json.dumps(results) + "\n")
    from loadtest import report

    print(json.dumps(report.write(results, out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
