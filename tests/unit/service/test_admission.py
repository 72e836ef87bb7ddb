"""The admission gate: queue places held by admitted requests, and when a response counts as sent."""

import asyncio
import time

from models.nn.subnet import SubnetConfig
from service.batcher import Batcher
from service.errors import Overloaded
from service.runtime import Runtime
from service.settings import Settings
from tests.unit.service.conftest import ItemFactory


def test_admitted_requests_hold_their_queue_place_until_queued(item: ItemFactory) -> None:
    """The gate counts requests it let in (body still being read) against the queue cap, so a
    request it admitted is never refused for a full queue later, and the cap is never exceeded."""
    runtime = Runtime(Settings(max_queue=2))
    runtime.ready = True

    async def scenario() -> None:
        runtime.batcher = Batcher(lambda s, items: [1 for _ in items], max_queue=2, max_batch_windows=1)
        first, second = runtime.admit(), runtime.admit()
        assert isinstance(runtime.admission_error(), Overloaded)  # both places taken, nothing queued yet
        assert runtime.admission_error(holding_place=True) is None  # the admitted ones go on
        second()
        second()  # a release is idempotent: the gate's finally may run after the queue took the place
        assert runtime.admitted == 1 and runtime.admission_error() is None
        waiting = item(time.perf_counter() + 5, SubnetConfig(), "a")
        queued = asyncio.ensure_future(runtime.batcher.submit(waiting, on_queued=first))
        await asyncio.sleep(0)  # the batcher is not started: the item stays queued
        assert (runtime.admitted, runtime.batcher.depth) == (0, 1)
        first()
        assert runtime.admitted == 0
        third = runtime.admit()
        assert isinstance(runtime.admission_error(), Overloaded)  # one queued + one admitted = the cap
        third()
        queued.cancel()
        await runtime.batcher.stop()

    asyncio.run(scenario())


def test_admission_reports_when_the_last_byte_of_a_response_was_sent() -> None:
    """`on_sent` gets a time after the transport took the final body message, not before."""
    from service.middleware import Admission

    transport_done: list[float] = []
    reported: list[float] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
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

    gate = Admission(app, "/v1/qa", lambda: None, lambda: lambda: None, lambda outcome, s: None)
    scope = {"type": "http", "method": "POST", "path": "/v1/qa", "headers": []}
    asyncio.run(gate(scope, receive, send))
    assert len(reported) == 1 and reported[0] >= transport_done[0]
