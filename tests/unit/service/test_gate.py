"""The admission gate (pure ASGI) on its own: when it says the last byte went out."""

import asyncio
import time
from types import SimpleNamespace

from service.api.middleware import Admission
from tests.unit.service.conftest import make_scheduler


def test_admission_reports_when_the_last_byte_of_a_response_was_sent() -> None:
    """`on_sent` gets a time after the transport took the final body message, not before."""
    transport_done: list[float] = []
    reported: list[float] = []
    scheduler = make_scheduler()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        assert scheduler.reserved == 1  # the request holds its place while it is read
        scope["state"]["on_sent"] = reported.append
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        assert not reported  # not yet: more body follows
        await send({"type": "http.response.body", "body": b""})

    async def send(message):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)  # a slow transport
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            transport_done.append(time.perf_counter())

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"", "more_body": False}

    gate = Admission(app, SimpleNamespace(reserve=scheduler.reserve))  # type: ignore[arg-type]
    scope = {"type": "http", "method": "POST", "path": "/v1/qa", "headers": [], "state": {}}
    asyncio.run(gate(scope, receive, send))
    assert len(reported) == 1 and reported[0] >= transport_done[0]
    assert scheduler.reserved == 0  # the place is given back when the request ends
