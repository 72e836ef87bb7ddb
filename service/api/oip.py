"""The Open Inference Protocol's REST routes (KServe v2, Triton), so `tritonclient.http`, KServe and
other v2 clients ask the same model, under the same budgets, as `/v1/qa`.

One model: its name is the checkpoint's directory name (alias `dynaqa`), its version `1`. An infer
request of N questions is one call of `engine.answer_all`: every pair planned and batched with the
rest of the traffic toward one deadline. The wire format is in `oip_codec`; error bodies take the
protocol's `{"error": "<message>"}` shape from `errors.py`, by path.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service import budget as budgets
from service.api import answering
from service.api import oip_codec as codec
from service.api.body import LimitedBodyRoute
from service.api.deps import EngineDep, OutcomesDep, RuntimeDep, SettingsDep
from service.api.oip_codec import HEADER_LENGTH, InvalidTensor, ModelMetadata, ModelReady, OIPError, Tensor
from service.api.schemas import QARequest
from service.engine.engine import Engine, Result
from service.errors import InvalidBudget, NotReady, ServiceError
from service.outcomes import Outcomes
from service.runtime import Runtime
from service.settings import Settings

router = APIRouter(route_class=LimitedBodyRoute)
Handler = Callable[..., Awaitable[Any]]
ALIAS = "dynaqa"
VERSION = "1"
EXTENSIONS = ["binary_tensor_data"]
INPUTS = ("question", "context")
OUTPUTS = {"answer": "BYTES", "score": "FP32", "start": "INT64", "end": "INT64"}
METADATA_TENSORS = {
    "inputs": [codec.TensorMetadata(name=n, datatype="BYTES", shape=[-1]) for n in INPUTS],
    "outputs": [codec.TensorMetadata(name=n, datatype=t, shape=[-1]) for n, t in OUTPUTS.items()],
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OIPError, "description": "Bad request: body, tensors, outputs or budget"},
    404: {"model": OIPError, "description": "No such model or version"},
    413: {"model": OIPError, "description": "Body, context or batch too large"},
    503: {"model": OIPError, "description": "Overloaded, draining or not ready (see Retry-After)"},
    504: {"model": OIPError, "description": "Deadline passed while queued; never computed"},
}


class ModelNotFound(ServiceError):
    status = 404
    outcome = "rejected"


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` references written in place: OpenAPI's
    `requestBody` has no `$defs` of its own to point into."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return walk(schema)  # type: ignore[no-any-return]


INFER_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON; or, with `Inference-Header-Content-Length`, that many bytes of JSON and then the "
        "binary tensors of the inputs that carry `parameters.binary_data_size`, in input order.",
        "content": {
            "application/json": {"schema": _inlined(codec.InferRequest.model_json_schema())},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def served_name(rt: Runtime, name: str, version: str | None = None) -> str:
    """The checkpoint's name when `name` (and `version`) is this model; else 404."""
    if rt.reader is None:
        raise NotReady("the replica is still loading its model", retry_after_s=2.0)
    served = rt.reader.checkpoint.path.resolve().name
    if name not in (served, ALIAS):
        raise ModelNotFound(f"unknown model {name!r}; this server serves {served!r} (alias {ALIAS!r})")
    if version is not None and version != VERSION:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; its only version is {VERSION!r}")
    return served


@router.get("/v2", response_model=codec.ServerMetadata, summary="OIP server metadata: name, version, extensions")
async def server_metadata(request: Request) -> codec.ServerMetadata:
    return codec.ServerMetadata(name="dynaqa", version=request.app.version, extensions=EXTENSIONS)


def versioned(method: str, suffix: str, summary: str, **route: Any) -> Callable[[Handler], Handler]:
    """Route `handler(name, version, ...)` at `/v2/models/{name}<suffix>` (version None) and at
    `/v2/models/{name}/versions/{version}<suffix>`, as the protocol has both. The unversioned
    endpoint's signature drops `version`, or FastAPI would document it as a query parameter."""

    def register(handler: Handler) -> Handler:
        async def latest(**kwargs: Any) -> Any:
            return await handler(version=None, **kwargs)

        signature = inspect.signature(handler)
        latest.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for p in signature.parameters.values() if p.name != "version"]
        )
        latest.__name__, latest.__doc__ = handler.__name__, handler.__doc__
        for path, endpoint, named in (
            (f"/v2/models/{{name}}{suffix}", latest, summary),
            (f"/v2/models/{{name}}/versions/{{version}}{suffix}", handler, f"{summary}, of one version"),
        ):
            router.add_api_route(path, endpoint, methods=[method], summary=named, **route)
        return handler

    return register


@versioned("GET", "", "OIP model metadata", response_model=ModelMetadata, responses=ERRORS)
async def model_metadata(name: str, version: str | None, rt: RuntimeDep) -> ModelMetadata:
    served = served_name(rt, name, version)
    return ModelMetadata(name=served, versions=[VERSION], platform="pytorch", **METADATA_TENSORS)


READY_RESPONSES = {**ERRORS, 503: {"model": ModelReady, "description": "Not ready, or draining"}}


@versioned("GET", "/ready", "OIP model readiness", response_model=ModelReady, responses=READY_RESPONSES)
async def model_ready(name: str, version: str | None, rt: RuntimeDep) -> JSONResponse:
    """Ready as `/v2/health/ready` is: loaded, calibrated and not draining (503 otherwise)."""
    body = ModelReady(name=served_name(rt, name, version), ready=rt.accepting)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


INFER_RESPONSES = {**ERRORS, 200: {"content": {"application/octet-stream": {}}}}


@versioned(
    "POST",
    "/infer",
    "OIP inference: answer N questions under one budget",
    response_model=codec.InferResponse,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_DOCS,
)
async def infer(
    name: str,
    version: str | None,
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    outcomes: OutcomesDep,
) -> Response:
    """Inputs `question` and `context`: BYTES, shape [N] or [N, 1], in JSON or binary. Outputs
    `answer`, `score`, `start`, `end` (all unless `outputs` lists some). Budget: the parameter
    `latency_budget_ms`, else the headers `/v1/qa` reads (`X-Latency-Budget-Ms`, `grpc-timeout`,
    `Prefer: wait=N`, ...), else the server default. The only version is `1`."""
    return await _infer(request, name, version, settings, engine, outcomes)


async def _infer(
    request: Request, name: str, version: str | None, settings: Settings, engine: Engine, outcomes: Outcomes
) -> Response:
    model = served_name(request.app.state.runtime, name, version)
    try:
        asked, binary = codec.parse(await request.body(), request.headers.get(HEADER_LENGTH))
    except ValidationError as exc:  # the error table words it, as it words FastAPI's own
        raise RequestValidationError(exc.errors(include_url=False)) from None
    pairs = _pairs(asked, codec.text_inputs(asked, binary))
    answering.check_batch(settings, pairs)
    wanted = _wanted(asked)
    budget = _budget(request, settings, asked.parameters)  # after the body, as /v1/qa: 400 for either
    results = await answering.answer(request, engine, outcomes, pairs, budget)
    if results is None:  # the client left
        return Response(status_code=499)
    header: dict[str, Any] = {"model_name": model, "model_version": VERSION}
    if asked.id is not None:
        header["id"] = asked.id
    header["parameters"] = {
        "latency_budget_ms": budget.ms,
        "budget_met": all(r.budget_met for r in results),
        "subnets": [r.candidate.subnet.id for r in results],
    }
    tensors = _tensors(results)
    body, length = codec.response_body(header, [tensors[n] for n, _ in wanted], [b for _, b in wanted])
    if length is None:
        response = Response(body, media_type="application/json")
    else:
        response = Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(length)})
    answering.set_headers(response, results)
    return response


def _pairs(asked: codec.InferRequest, inputs: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(question, context) pairs, each held to /v1/qa's rules for its text."""
    if set(inputs) != set(INPUTS):
        raise InvalidTensor(f"inputs must be exactly {list(INPUTS)}; got {sorted(inputs)}")
    for tensor in asked.inputs:
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ([], [1]):
            raise InvalidTensor(f"input {tensor.name!r} has shape {tensor.shape}; expected [N] or [N, 1]")
    questions, contexts = inputs["question"], inputs["context"]
    if len(questions) != len(contexts):
        raise InvalidTensor(f"{len(questions)} questions but {len(contexts)} contexts; they pair one to one")
    if not questions:
        raise InvalidTensor("no questions: N must be at least 1")
    for i, (question, context) in enumerate(zip(questions, contexts, strict=True)):
        try:
            QARequest(question=question, context=context)
        except ValidationError as exc:
            raise InvalidTensor(f"pair {i}: " + "; ".join(e["msg"] for e in exc.errors())) from None
    return list(zip(questions, contexts, strict=True))


def _wanted(asked: codec.InferRequest) -> list[tuple[str, bool]]:
    """The outputs asked for, in order, and whether each goes binary (its own `binary_data`, else
    the request's `binary_data_output`); checked before any work is queued."""
    default = asked.parameters.get("binary_data_output") is True
    requested = asked.outputs if asked.outputs is not None else [codec.RequestedOutput(name=n) for n in OUTPUTS]
    names = [o.name for o in requested]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or len(set(names)) != len(names) or not names:
        raise InvalidTensor(f"outputs {names} must be distinct names among {list(OUTPUTS)}")
    return [(o.name, o.parameters.get("binary_data", default) is True) for o in requested]


def _budget(request: Request, settings: Settings, parameters: dict[str, Any]) -> budgets.Budget:
    """The parameter `latency_budget_ms` wins over the headers; parsed by `budget.parse` either way,
    so clamping, strictness and `Preference-Applied` follow the same rules as /v1/qa."""
    headers = request.headers.mutablecopy()
    if "latency_budget_ms" in parameters:
        value = parameters["latency_budget_ms"]
        try:  # a JSON integer of 400 digits is a Python int that float() cannot hold
            ms = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        except OverflowError:
            ms = math.inf
        if not math.isfinite(ms) or ms <= 0:
            raise InvalidBudget(f"parameters.latency_budget_ms must be a positive finite number, got {str(value)[:40]}")
        headers["x-latency-budget-ms"] = repr(ms)
    return budgets.parse(headers, settings.default_budget_ms, settings.min_budget_ms, settings.max_budget_ms)


def _tensors(results: list[Result]) -> dict[str, Tensor]:
    best = [r.answer for r in results]
    return {
        "answer": Tensor("answer", "BYTES", [a.text for a in best]),
        "score": Tensor("score", "FP32", [a.score for a in best]),
        "start": Tensor("start", "INT64", [a.start for a in best]),
        "end": Tensor("end", "INT64", [a.end for a in best]),
    }
