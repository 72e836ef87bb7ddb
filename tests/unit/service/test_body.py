"""Bodies read under the limit by the route class, on a bare app with the service's error table."""

import asyncio
from types import SimpleNamespace

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from service.api.body import LimitedBodyRoute
from service.api.errors import HANDLERS


class Echo(BaseModel):
    text: str


def app_with_limit(max_bytes: int) -> FastAPI:
    router = APIRouter(route_class=LimitedBodyRoute)

    @router.post("/echo")
    async def echo(body: Echo) -> Echo:
        return body

    app = FastAPI(exception_handlers=HANDLERS)
    app.state.settings = SimpleNamespace(max_body_bytes=max_bytes)
    app.state.runtime = SimpleNamespace(outcomes=None)  # nothing to count on a bare app
    app.include_router(router)
    return app


def call(app: FastAPI, messages: list[dict], headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, bytes]:  # type: ignore[type-arg,assignment]
    sent: list[dict] = []  # type: ignore[type-arg]
    queue = list(messages)

    async def receive() -> dict:  # type: ignore[type-arg]
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    headers = [(b"content-type", b"application/json"), *headers]
    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": headers, "query_string": b"",
             "state": {"arrival": 0.0}}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_body_within_the_limit_is_parsed_as_usual() -> None:
    status, body = call(app_with_limit(100), [{"type": "http.request", "body": b'{"text": "hi"}'}])
    assert status == 200 and body == b'{"text":"hi"}'


def test_a_declared_or_streamed_body_over_the_limit_is_413() -> None:
    declared = call(app_with_limit(10), [], [(b"content-length", b"11")])
    chunks = [
        {"type": "http.request", "body": b'{"text": "', "more_body": True},
        {"type": "http.request", "body": b"x" * 20},
    ]
    streamed = call(app_with_limit(16), chunks)
    assert declared[0] == streamed[0] == 413 and b"payload_too_large" in declared[1] + streamed[1]


def test_a_client_gone_mid_body_is_an_unreadable_body_not_a_server_error() -> None:
    status, body = call(app_with_limit(100), [{"type": "http.request", "body": b'{"te', "more_body": True}])
    assert status == 422 and b"invalid_request" in body
