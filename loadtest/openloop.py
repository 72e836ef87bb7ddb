"""A bounded open-loop load generator: Poisson arrivals at a set rate, over HTTP, loopback only.

Closed loops (N clients waiting for answers) slow down when the server does and hide overload;
an open loop keeps sending at the offered rate whatever happens, as real traffic does.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx

from models.data.squad import SquadExample

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Record:
    sent_at: float  # seconds since the start of the run
    status: int  # 0 when no HTTP response came back
    latency_s: float
    budget_ms: float
    qid: str
    body: dict = field(default_factory=dict)  # type: ignore[type-arg]
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""


async def run(
    url: str,
    examples: list[SquadExample],
    rate_per_s: float,
    seconds: float,
    budget_ms: Callable[[random.Random], float],
    max_requests: int = 20_000,
    seed: int = 0,
    extra_headers: dict[str, str] | None = None,
    warm_path: str = "/v2/health/ready",
    warm_connections: int = 16,
) -> list[Record]:
    """Send Poisson arrivals at `rate_per_s` for `seconds` (at most `max_requests`); wait for all.

    Before the clock starts, `warm_connections` concurrent GETs of `warm_path` per client pool
    open keep-alive connections, as a real client's pool (or a load balancer's) already has:
    otherwise the first second measures TCP set-up, not the server. The heap is frozen for the
    same reason: a full collection over torch's objects in this process would stall the
    generator for ~150 ms and count as server latency.
    """
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"load tests only target loopback, not {url}")
    gc.collect()
    gc.freeze()
    rng = random.Random(seed)
    headers = extra_headers or {}
    # Several small pools: httpcore's pool does work proportional to pending requests x
    # connections on every event, which collapses one large pool at a few thousand pending.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    clients = [httpx.AsyncClient(timeout=60, limits=limits) for _ in range(8)]
    try:
        await asyncio.gather(*(c.get(url + warm_path) for c in clients for _ in range(warm_connections)))
        began = time.perf_counter()
        tasks = []
        next_at = 0.0
        while next_at < seconds and len(tasks) < max_requests:
            delay = began + next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            client = clients[len(tasks) % len(clients)]
            tasks.append(asyncio.create_task(_ask(client, url, rng.choice(examples), budget_ms(rng), headers, began)))
            next_at += rng.expovariate(rate_per_s)
        records = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return sorted(records, key=lambda r: r.sent_at)


async def _ask(
    client: httpx.AsyncClient,
    url: str,
    example: SquadExample,
    budget: float,
    extra_headers: dict[str, str],
    began: float,
) -> Record:
    """One question with its budget; what came back, or the transport error, and how long it took."""
    sent = time.perf_counter()
    headers = {"X-Latency-Budget-Ms": f"{budget:.1f}", **extra_headers}
    record = Record(sent - began, 0, 0.0, budget, example.qid)
    try:
        response = await client.post(
            url + "/v1/qa", json={"question": example.question, "context": example.context}, headers=headers
        )
        record.status = response.status_code
        record.headers = dict(response.headers)
        if response.headers.get("content-type", "").startswith("application/json"):
            record.body = response.json()
    except httpx.HTTPError as exc:
        record.error = type(exc).__name__
    record.latency_s = time.perf_counter() - sent
    return record
