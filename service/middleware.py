"""Pure ASGI middleware: the checks that must cost microseconds, before any body is read.

Starlette's `@app.middleware("http")`, FastAPI's body parsing and pydantic validation cost a few
milliseconds of event-loop time per request. Under ten times the capacity that is exactly the time
an overloaded replica does not have, so the refusals that do not depend on the body (draining, not
ready, queue full) and the size limit are decided here, on the scope alone.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError
from service.logs import request_id

log = logging.getLogger("dynaqa.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def error_response(status: int, kind: str, message: str, retry_after_s: float | None = None) -> JSONResponse:
    """The one error body of DESIGN.md §4: {"error": {"type", "message"}}, Retry-After when given."""
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s is not None else None
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    """A domain error as its response; the type is the class name in snake case."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return error_response(exc.status, kind, str(exc), exc.retry_after_s)


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-Id when it is well formed, else a fresh one."""
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject: Callable[[], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            message = f"body of {int(declared)} bytes exceeds {self.max_bytes}"
            response = error_response(413, "payload_too_large", message)
            self.on_reject()
            await response(scope, receive, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, counting, send)


class Admission:
    """Refuse POST `path` at once when `refusal()` names a reason; stamp every request's arrival.

    `refusal` returns the error a new request would get whatever its body (draining, not ready,
    queue full) or None; `on_refused(outcome, seconds)` counts it. An admitted request holds a
    place from `admit()` until it ends; its release is in `scope["state"]["release_place"]` for
    the request path to hand the place to the queue earlier. Every request carries its arrival
    time in `scope["state"]["arrival"]`, so latency is measured from the first moment the app
    saw it. When the last byte of a response has been handed to the transport, the callable
    the request path left in `scope["state"]["on_sent"]` (if any) gets the time.
    """

    def __init__(
        self,
        app: ASGIApp,
        path: str,
        refusal: Callable[[], ServiceError | None],
        admit: Callable[[], Callable[[], None]],
        on_refused: Callable[[str, float], None],
    ) -> None:
        self.app = app
        self.path = path
        self.refusal = refusal
        self.admit = admit
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = time.perf_counter()
        scope.setdefault("state", {})["arrival"] = arrival
        if scope["method"] == "POST" and scope["path"] == self.path:
            error = self.refusal()
            if error is not None:
                rid = request_id_of(scope)
                response = service_error_response(error)
                response.headers["X-Request-Id"] = rid
                await response(scope, receive, send)
                self.on_refused(error.outcome, time.perf_counter() - arrival)
                token = request_id.set(rid)
                log.info(json.dumps({"event": "request", "outcome": error.outcome, "reason": str(error)}))
                request_id.reset(token)
                return
            release = self.admit()
            scope["state"]["release_place"] = release

            async def timed_send(message: Message) -> None:
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    on_sent = scope["state"].get("on_sent")
                    if on_sent is not None:
                        try:
                            on_sent(time.perf_counter())
                        except Exception:  # bookkeeping: the response is out, the connection stays
                            log.exception(json.dumps({"event": "on_sent hook failed"}))

            try:
                await self.app(scope, receive, timed_send)
            finally:
                release()
            return
        await self.app(scope, receive, send)
