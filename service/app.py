"""The FastAPI app: `create_app(settings)`; lifespan, middleware, routes and the error table."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import InvalidInput
from models.nn.subnet import SubnetConfig
from service import budget as budgets
from service.errors import NotReady, PayloadTooLarge, ServiceError
from service.logs import request_id
from service.middleware import Admission, BodyLimit, error_response, request_id_of, service_error_response
from service.runtime import Result, Runtime
from service.schemas import ErrorResponse, ModelInfo, QARequest, QAResponse, ServedSubnet, SubnetInfo
from service.settings import Settings

log = logging.getLogger("dynaqa.access")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def create_app(settings: Settings) -> FastAPI:
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="dynaqa",
        version="0.1.0",
        summary="Extractive QA from one dynamic BERT, answered within each request's latency budget.",
        lifespan=lifespan,
        responses={422: {"model": ErrorResponse}},
    )
    app.state.runtime = runtime

    def count_oversize() -> None:
        if runtime.metrics is not None:
            runtime.record("rejected", 0.0)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_reject=count_oversize)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Any) -> Response:
        rid = request_id_of(request.scope)
        token = request_id.set(rid)
        try:
            try:
                response = await call_next(request)
            except PayloadTooLarge as exc:
                response = error_response(413, "payload_too_large", str(exc))
            except Exception:  # here, not in an app-level handler, so the log line carries the request id
                log.exception(json.dumps({"event": "unhandled error", "path": request.url.path}))
                _count(request, "error")
                message = "internal error; see the server log for this request id"
                response = error_response(500, "internal_error", message)
            response.headers["X-Request-Id"] = rid
            return response
        finally:
            request_id.reset(token)

    # Outermost: refusals that do not depend on the body never reach the parsing layers below.
    app.add_middleware(
        Admission, path="/v1/qa", refusal=runtime.admission_error, admit=runtime.admit, on_refused=runtime.record
    )

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        _count(request, exc.outcome, str(exc))
        return service_error_response(exc)

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        _count(request, "rejected")
        return error_response(422, "invalid_input", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        _count(request, "rejected")
        problems = []
        for error in exc.errors():
            loc = [str(p) for p in error.get("loc", ()) if p != "body"]
            where = "body (not valid JSON)" if error.get("type") == "json_invalid" else ".".join(loc) or "body"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse(
            {"error": {"type": "invalid_request", "message": "; ".join(problems)}},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, PayloadTooLarge):  # a streamed body over the limit, met mid-read
            _count(request, "rejected")
            return error_response(413, "payload_too_large", str(exc.__cause__))
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not UTF-8 JSON
            _count(request, "rejected")
            return error_response(422, "invalid_request", "body (not valid UTF-8 JSON)")
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, kind, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    def _count(request: Request, outcome: str, reason: str | None = None) -> None:
        if request.url.path == "/v1/qa" and runtime.metrics is not None:
            runtime.record(outcome, time.perf_counter() - request.state.arrival)
            log.info(json.dumps({"event": "request", "outcome": outcome, "reason": reason}))

    @app.post(
        "/v1/qa",
        response_model=QAResponse,
        responses={
            400: {"model": ErrorResponse, "description": "Invalid budget header, or strict budget below the floor"},
            413: {"model": ErrorResponse, "description": "Body or context too large"},
            503: {"model": ErrorResponse, "description": "Overloaded, draining or not ready (see Retry-After)"},
            504: {"model": ErrorResponse, "description": "Deadline passed while queued; never computed"},
        },
        summary="Answer a question from a context within the request's latency budget",
    )
    async def qa(body: QARequest, request: Request, response: Response, rt: RuntimeDep) -> QAResponse:
        """Budget: `X-Latency-Budget-Ms`, else the smallest of `grpc-timeout`,
        `x-envoy-expected-rq-timeout-ms` and `Prefer: wait=N`, else the server default.
        Strict handling (`Prefer: handling=strict` or `X-Budget-Policy: strict`) refuses what
        cannot be met instead of answering late with the fastest sub-network."""
        budget = budgets.parse(
            request.headers, settings.default_budget_ms, settings.min_budget_ms, settings.max_budget_ms
        )
        result = await _unless_disconnected(
            request,
            rt.answer(body.question, body.context, budget, request.state.arrival, request.state.release_place),
        )
        if result is None:  # the client left: its work was cancelled (dropped if still queued)
            rt.record("cancelled", time.perf_counter() - request.state.arrival)
            return Response(status_code=499)  # type: ignore[return-value]
        outcome = "ok" if result.fits and result.budget_met else "degraded"
        rt.record(outcome, result.latency_s, result)
        request.state.on_sent = functools.partial(rt.settle, result)
        _headers(response, result)
        log.info(
            json.dumps(
                {
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
            )
        )
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

    @app.get(
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

    @app.get("/v2/health/live", summary="The process is up")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="Model loaded, warmed, calibrated and not draining")
    async def ready(rt: RuntimeDep) -> JSONResponse:
        ok = rt.ready and not rt.draining
        body = {"ready": ok, "draining": rt.draining, "calibration": rt.calibration_source or None}
        if rt.failed:
            body["failed"] = rt.failed
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(rt: RuntimeDep) -> Response:
        if rt.metrics is None:
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        rt.metrics.queue_depth.set(rt.batcher.depth if rt.batcher else 0)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


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


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` with several workers: settings from DYNAQA_* variables."""
    from service import logs

    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings)
