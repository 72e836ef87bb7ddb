"""The routes: thin; each asks the engine or the runtime and shapes the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.nn.subnet import SubnetConfig
from service import budget as budgets
from service.api import answering
from service.api.body import LimitedBodyRoute
from service.api.deps import EngineDep, OutcomesDep, RuntimeDep, SettingsDep
from service.api.errors import QA_PATH
from service.api.schemas import (
    ErrorResponse,
    HFRequest,
    ModelInfo,
    QABatchRequest,
    QABatchResponse,
    QABody,
    QAResponse,
    ServedSubnet,
    Span,
    SubnetInfo,
)
from service.engine.engine import Result
from service.errors import NotReady

router = APIRouter(route_class=LimitedBodyRoute)

QA_EXAMPLES: dict[str, Any] = {
    "one": {"value": {"question": "Who wrote it?", "context": "The book was written by Ada Lovelace in 1843."}},
    "batch": {
        "value": {
            "questions": [
                {"question": "Who wrote it?", "context": "The book was written by Ada Lovelace in 1843."},
                {"question": "When was it written?", "context": "The book was written by Ada Lovelace in 1843."},
            ],
            "top_k": 2,
        }
    },
    "huggingface": {
        "value": {"inputs": {"question": "Who wrote it?", "context": "The book was written by Ada Lovelace in 1843."}}
    },
}
QA_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid budget header, or strict budget below the floor"},
    413: {"model": ErrorResponse, "description": "Body or context too large"},
    503: {"model": ErrorResponse, "description": "Overloaded, draining or not ready (see Retry-After)"},
    504: {"model": ErrorResponse, "description": "Deadline passed while queued; never computed"},
}


@router.post(
    QA_PATH,
    response_model=QAResponse | QABatchResponse | Span | list[Span] | list[Span | list[Span]],
    responses=QA_RESPONSES,
    summary="Answer questions from contexts within the request's latency budget",
)
async def qa(
    body: Annotated[QABody, Body(openapi_examples=QA_EXAMPLES)],
    request: Request,
    response: Response,
    settings: SettingsDep,
    engine: EngineDep,
    outcomes: OutcomesDep,
) -> Any:
    """Three bodies: one `{question, context, top_k?}`; a batch `{questions: [...], top_k?}`
    answered under one budget (each question planned and batched with the rest of the traffic);
    or the Hugging Face payload `{inputs: {question, context} | [...], parameters: {top_k}}`,
    answered in the Hugging Face pipeline's shape.

    Budget: `X-Latency-Budget-Ms`, else the smallest of `grpc-timeout`,
    `x-envoy-expected-rq-timeout-ms` and `Prefer: wait=N`, else the server default.
    Strict handling (`Prefer: handling=strict` or `X-Budget-Policy: strict`) refuses what
    cannot be met instead of answering late with the fastest sub-network."""
    if isinstance(body, HFRequest):
        listed = isinstance(body.inputs, list)
        asked = body.inputs if isinstance(body.inputs, list) else [body.inputs]
        top_k = body.parameters.top_k
    else:
        listed = isinstance(body, QABatchRequest)
        asked = body.questions if isinstance(body, QABatchRequest) else [body]
        top_k = body.top_k
    pairs = [(q.question, q.context) for q in asked]
    answering.check_batch(settings, pairs)
    # Parsed here, after the body validated: a bad body is 422 before a bad budget header is 400.
    budget = budgets.parse(request.headers, settings.default_budget_ms, settings.min_budget_ms, settings.max_budget_ms)
    results = await answering.answer(request, engine, outcomes, pairs, budget, top_k)
    if results is None:  # the client left
        return Response(status_code=499)
    answering.set_headers(response, results)
    if isinstance(body, HFRequest):
        spans = [_spans(r)[0] if top_k == 1 else _spans(r) for r in results]
        return spans if listed else spans[0]
    answers = [_qa_response(r) for r in results]
    if not listed:
        return answers[0]
    return QABatchResponse(
        results=answers,
        latency_ms=round(max(r.latency_s for r in results) * 1000, 3),
        budget_ms=budget.ms,
        budget_met=all(r.budget_met for r in results),
    )


def _spans(result: Result) -> list[Span]:
    return [Span(answer=a.text, score=a.score, start=a.start, end=a.end) for a in result.answers]


def _qa_response(result: Result) -> QAResponse:
    best = result.answer
    return QAResponse(
        answer=best.text,
        score=best.score,
        start=best.start,
        end=best.end,
        answers=_spans(result),
        subnet=SubnetInfo(**_subnet_fields(result.candidate.subnet)),
        expected_f1=result.candidate.expected_f1,
        latency_ms=round(result.latency_s * 1000, 3),
        budget_ms=result.budget.ms,
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
