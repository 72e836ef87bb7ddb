"""What every question-answering route does the same way, whatever its wire format (`/v1/qa`,
the Open Inference Protocol): bound the call, hand the pairs to the engine under one budget, record
and log the outcomes, and name in headers what answered and how the time went."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response

from service import budget as budgets
from service.engine.engine import Engine, Result
from service.errors import PayloadTooLarge
from service.outcomes import Outcomes
from service.settings import Settings

log = logging.getLogger("dynaqa.access")
T = TypeVar("T")


def check_batch(settings: Settings, pairs: list[tuple[str, str]]) -> None:
    """The bounds of one call: 413 past the question count or the total characters."""
    if len(pairs) > settings.max_batch_questions:
        raise PayloadTooLarge(f"{len(pairs)} questions in one call; the limit is {settings.max_batch_questions}")
    total = sum(len(q) + len(c) for q, c in pairs)
    if total > settings.max_batch_chars:
        raise PayloadTooLarge(f"{total} characters in one call; the limit is {settings.max_batch_chars}")


async def answer(
    request: Request,
    engine: Engine,
    outcomes: Outcomes,
    pairs: list[tuple[str, str]],
    budget: budgets.Budget,
    top_k: int = 1,
) -> list[Result] | None:
    """Answer `pairs` under `budget`, record and log each outcome, and leave the hook that lets
    the planner learn when the response went out; None when the client left first (its work
    cancelled, dropped if still queued)."""
    arrival = request.state.arrival
    place = request.scope["state"].get("place")
    work = engine.answer_all(pairs, budget, arrival, place, top_k)
    results = await unless_disconnected(request, work)
    if results is None:
        outcomes.record("cancelled", time.perf_counter() - arrival)
        return None
    for result in results:
        outcome = "ok" if result.fits and result.budget_met else "degraded"
        outcomes.record(outcome, result.latency_s, result)
        event = {
            "event": "request",
            "path": request.url.path,
            "outcome": outcome,
            "subnet": result.candidate.subnet.id,
            "budget_ms": budget.ms,
            "latency_ms": round(result.latency_s * 1000, 2),
            "planned_ms": round(result.planned_s * 1000, 2),
            "queue_ms": round(result.queue_s * 1000, 2),
            "model_ms": round(result.model_s * 1000, 2),
            "budget_met": result.budget_met,
        }
        log.info(json.dumps(event))
    request.state.on_sent = functools.partial(_settle_all, engine, results)
    return results


def _settle_all(engine: Engine, results: list[Result], sent_at: float) -> None:
    for result in results:
        engine.settle(result, sent_at)


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Run `work`, cancelling it if the client disconnects first (then None)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return None


def set_headers(response: Response, results: list[Result]) -> None:
    """What answered and how the time went: the sub-networks, the budget, the slowest answer's split."""
    response.headers["X-Subnet"] = ", ".join(dict.fromkeys(r.candidate.subnet.id for r in results))
    f1s = [r.candidate.expected_f1 for r in results]
    if None not in f1s:
        response.headers["X-Expected-F1"] = f"{min(f1s):.2f}"  # type: ignore[type-var]
    response.headers["X-Budget-Met"] = "true" if all(r.budget_met for r in results) else "false"
    slowest = max(results, key=lambda r: r.latency_s)
    response.headers["Server-Timing"] = (
        f"queue;dur={max(0.0, slowest.queue_s) * 1000:.2f}, model;dur={slowest.model_s * 1000:.2f}"
    )
    if slowest.budget.preferences_applied:
        response.headers["Preference-Applied"] = ", ".join(slowest.budget.preferences_applied)
