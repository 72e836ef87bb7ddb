"""Pure ASGI middleware: what must cost microseconds, decided on the scope before any body is read.

Starlette's `@app.middleware("http")` wraps every request in a task and a streamed response, and
FastAPI's body parsing and validation cost milliseconds of event-loop time; under ten times the
capacity that is the time an overloaded replica lacks. So the request id and the refusals that
do not depend on the body (draining, not ready, queue full) live here, on the scope alone.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import count, error_response, is_inference, service_error_response
from service.errors import ServiceError
from service.logs import request_id
from service.runtime import Runtime

log = logging.getLogger("dynaqa.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-Id when it is well formed, else a fresh one."""
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return given if REQUEST_ID.match(given) else uuid.uuid4().hex


class RequestContext:
    """Outermost: stamps the arrival, carries the request id in logs and in `X-Request-Id`, and
    turns an unhandled error into a logged 500 that names that id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["arrival"] = time.perf_counter()
        rid = request_id_of(scope)
        token = request_id.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-Id"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(json.dumps({"event": "unhandled error", "path": scope["path"]}))
            count(scope, "error")
            if started:  # half a response is out: nothing sensible is left to send
                raise
            message = "internal error; see the server log for this request id"
            await error_response(500, "internal_error", message)(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class Admission:
    """The gate of POST /v1/qa: refuse at once when the runtime names a reason, else hold a queue
    place (`scope["state"]["place"]`) until the request is queued or ends.

    When the last byte of a response has been handed to the transport, the callable the route
    left in `scope["state"]["on_sent"]` (if any) gets the time: the plan margin learns from it.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not is_inference(scope["path"]):
            await self.app(scope, receive, send)
            return
        place = self.runtime.reserve()
        if isinstance(place, ServiceError):
            await service_error_response(place)(scope, receive, send)
            count(scope, place.outcome, str(place))
            return
        scope["state"]["place"] = place

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
            place.release()
