"""Every error response of the API, produced here: one table of handlers, a body shape per path.

The body is `{"error": {"type", "message"}}` with `Retry-After` where a retry can help; on the Open
Inference Protocol's paths (`/v2...`) it is that protocol's `{"error": "<message>"}`, and a bad
request there is 400, never 422. Domain errors (`service.errors`) carry their status; 413 is
`PayloadTooLarge`, whichever layer found it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from models.errors import InvalidInput
from service.errors import ServiceError

log = logging.getLogger("dynaqa.access")
QA_PATH = "/v1/qa"
INFER_PATH = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/infer$")


def is_inference(path: str) -> bool:
    """Paths that ask questions: gated by Admission, and their refusals counted as question outcomes."""
    return path == QA_PATH or INFER_PATH.match(path) is not None


def is_oip(path: str) -> bool:
    """The Open Inference Protocol's paths, whose clients (tritonclient, KServe) read `{"error": str}`."""
    return path == "/v2" or path.startswith("/v2/")


def error_body(path: str, kind: str, message: str) -> dict[str, object]:
    return {"error": message} if is_oip(path) else {"error": {"type": kind, "message": message}}


class ErrorJSONResponse(JSONResponse):
    """An error whose body takes its shape from the path it is sent on, decided when it is sent:
    the ASGI layers (Admission, RequestContext, auth) make errors from the scope and need not know."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.kind, self.message = kind, message
        super().__init__({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_oip(scope["path"]):
            self.body = self.render(error_body(scope["path"], self.kind, self.message))
            self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)


def error_response(status: int, kind: str, message: str, retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s is not None else None
    return ErrorJSONResponse(status, kind, message, headers)


def bad_request_status(scope: Scope) -> int:
    """422 for an unreadable or invalid request, except where the protocol says 400 (OIP)."""
    return 400 if is_oip(scope["path"]) else 422


def service_error_response(exc: ServiceError) -> JSONResponse:
    """A domain error as its response; the type is the class name in snake case."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return error_response(exc.status, kind, str(exc), exc.retry_after_s)


def count(scope: Scope, outcome: str, reason: str | None = None) -> None:
    """Count a question request that ended without an answer, and log why."""
    outcomes = scope["app"].state.runtime.outcomes
    if is_inference(scope["path"]) and outcomes is not None:
        outcomes.record(outcome, time.perf_counter() - scope["state"]["arrival"])
        log.info(json.dumps({"event": "request", "outcome": outcome, "reason": reason}))


async def on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    count(request.scope, exc.outcome, str(exc))
    return service_error_response(exc)


async def on_invalid_input(request: Request, exc: Exception) -> Response:
    count(request.scope, "rejected")
    return error_response(bad_request_status(request.scope), "invalid_input", str(exc))


async def on_invalid_request(request: Request, exc: Exception) -> Response:
    """422 (OIP: 400) naming each field that failed validation ("body (not valid JSON)" for bad JSON)."""
    assert isinstance(exc, RequestValidationError)
    count(request.scope, "rejected")
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = "body (not valid JSON)" if error.get("type") == "json_invalid" else ".".join(loc) or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(bad_request_status(request.scope), "invalid_request", "; ".join(problems))


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) in the one body shape; FastAPI's "error parsing the body" (bytes
    that are not UTF-8 JSON) is a 422 like any other unreadable body."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        count(request.scope, "rejected")
        return error_response(bad_request_status(request.scope), "invalid_request", "body (not valid UTF-8 JSON)")
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, kind, str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    ServiceError: on_service_error,
    InvalidInput: on_invalid_input,
    RequestValidationError: on_invalid_request,
    StarletteHTTPException: on_http_error,
}
