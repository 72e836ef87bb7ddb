"""The routes: thin; each asks the engine or the runtime and shapes the answer."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.nn.subnet import SubnetConfig
from service import budget as budgets
from service.api.body import LimitedBodyRoute
from service.api.deps import EngineDep, OutcomesDep, RuntimeDep, SettingsDep
from service.api.errors import QA_PATH
from service.api.schemas import ErrorResponse, ModelInfo, QARequest, QAResponse, ServedSubnet, SubnetInfo
from service.engine.engine import Result
from service.errors import NotReady

log = logging.getLogger("dynaqa.access")
router = APIRouter(route_class=LimitedBodyRoute)

QA_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid budget header, or strict budget below the floor"},
    413: {"model": ErrorResponse, "description": "Body or context too large"},
    503: {"model": ErrorResponse, "description": "Overloaded, draining or not ready (see Retry-After)"},
    504: {"model": ErrorResponse, "description": "Deadline passed while queued; never computed"},
}


@router.post(
    QA_PATH,
    response_model=QAResponse,
    responses=QA_RESPONSES,
    summary="Answer a question from a context within the request's latency budget",
)
async def qa(
    body: QARequest,
    request: Request,
    response: Response,
    settings: SettingsDep,
    engine: EngineDep,
    outcomes: OutcomesDep,
) -> QAResponse:
    """Budget: `X-Latency-Budget-Ms`, else the smallest of `grpc-timeout`,
    `x-envoy-expected-rq-timeout-ms` and `Prefer: wait=N`, else the server default.
    Strict handling (`Prefer: handling=strict` or `X-Budget-Policy: strict`) refuses what
    cannot be met instead of answering late with the fastest sub-network."""
    # Parsed here, after the body validated: a bad body is 422 before a bad budget header is 400.
    budget = budgets.parse(request.headers, settings.default_budget_ms, settings.min_budget_ms, settings.max_budget_ms)
    arrival = request.state.arrival
    work = engine.answer(body.question, body.context, budget, arrival, request.scope["state"].get("place"))
    result = await _unless_disconnected(request, work)
    if result is None:  # the client left: its work was cancelled (dropped if still queued)
        outcomes.record("cancelled", time.perf_counter() - arrival)
        return Response(status_code=499)  # type: ignore[return-value]
    outcome = "ok" if result.fits and result.budget_met else "degraded"
    outcomes.record(outcome, result.latency_s, result)
    request.state.on_sent = functools.partial(engine.settle, result)
    _headers(response, result)
    event = {
        "event": "request",
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
    return QAResponse(
        answer=result.answer.text,
        score=result.answer.score,
        start=result.answer.start,
        end=result.answer.end,
        subnet=SubnetInfo(**_subnet_fields(result.candidate.subnet)),
        expected_f1=result.candidate.expected_f1,
        latency_ms=round(result.latency_s * 1000, 3),
        budget_ms=budget.ms,
        budget_met=result.budget_met,
    )


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    responses={503: {"model": ErrorResponse, "description": "Not calibrated yet (see Retry-After)"}},
    summary="What this replica serves: the checkpoint, the front and its sub-networks",
)
async def model(rt: RuntimeDep) -> ModelInfo:
    """The sub-networks the planner chooses from on this replica, most accurate first. They
    depend on the CPU (with `DYNAQA_INT8=auto`, INT8 is served only where it pays) and on its
    calibration (the planner drops points not at least 1.1x faster than a more accurate one)."""
    planner = rt.planner
    if rt.failed:
        raise NotReady(f"start-up failed: {rt.failed}")
    if planner is None or rt.reader is None:
        raise NotReady("the replica is still calibrating", retry_after_s=2.0)
    first_reserve = len(planner.candidates)
    return ModelInfo(
        checkpoint=rt.reader.checkpoint.path.resolve().name,
        int8=any(c.subnet.quantized for c in planner.served),
        front=rt.front,
        level=rt.level,
        subnets=[
            ServedSubnet(
                **_subnet_fields(c.subnet),
                quantized=c.subnet.quantized,
                expected_f1=c.expected_f1,
                macs=c.macs,
                role="reserve" if i >= first_reserve else "candidate",
            )
            for i, c in enumerate(planner.served)
        ],
    )


@router.get("/v2/health/live", summary="The process is up")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="Model loaded, warmed, calibrated and not draining")
async def ready(rt: RuntimeDep) -> JSONResponse:
    ok = rt.accepting
    body = {"ready": ok, "draining": rt.draining or rt.leaving, "calibration": rt.calibration_source or None}
    if rt.failed:
        body["failed"] = rt.failed
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(rt: RuntimeDep) -> Response:
    if rt.metrics is None:
        return Response(b"", media_type=CONTENT_TYPE_LATEST)
    rt.metrics.queue_depth.set(rt.engine.scheduler.depth if rt.engine else 0)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _subnet_fields(subnet: SubnetConfig) -> dict[str, Any]:
    return {
        "id": subnet.id,
        "width": subnet.width,
        "depth": subnet.depth,
        "lengths": list(subnet.lengths) if subnet.lengths else None,
        "layer_widths": list(subnet.layer_widths) if subnet.layer_widths else None,
    }


async def _unless_disconnected(request: Request, work: Coroutine[Any, Any, Result]) -> Result | None:
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


def _headers(response: Response, result: Result) -> None:
    response.headers["X-Subnet"] = result.candidate.subnet.id
    if result.candidate.expected_f1 is not None:
        response.headers["X-Expected-F1"] = f"{result.candidate.expected_f1:.2f}"
    response.headers["X-Budget-Met"] = "true" if result.budget_met else "false"
    response.headers["Server-Timing"] = (
        f"queue;dur={max(0.0, result.queue_s) * 1000:.2f}, model;dur={result.model_s * 1000:.2f}"
    )
    if result.budget.preferences_applied:
        response.headers["Preference-Applied"] = ", ".join(result.budget.preferences_applied)
