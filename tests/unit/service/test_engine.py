"""The engine loop and the executor over the tiny checkpoint's real reader: what is never
computed, what a failing model does to a batch, what shutdown does to the queue, and the
model thread's priority."""

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from models.errors import InvalidInput
from models.infer import checkpoint
from models.infer.reader import Reader
from service.budget import Budget
from service.engine.engine import Engine, Limits
from service.engine.executor import Executor
from service.engine.scheduler import Scheduler
from service.errors import Overloaded, PayloadTooLarge
from service.metrics import Metrics
from tests.unit.service.conftest import make_planner

CONTEXT = "The Eiffel Tower was completed in 1889 in Paris. It was designed by Gustave Eiffel's company."
LOOSE = Budget(5000, False, "x-latency-budget-ms")


@pytest.fixture(scope="module")
def reader(tiny_checkpoint: Path) -> Reader:
    return Reader(checkpoint.load(tiny_checkpoint, int8=False), max_length=128, stride=32)


@pytest.fixture
def computed(reader: Reader, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The questions the model computed, in order; each batch takes at least 30 ms."""
    seen: list[str] = []
    real = reader.answer_batch

    def slow(requests, subnet):  # type: ignore[no-untyped-def]
        seen.extend(asked.example.question for asked in requests)
        time.sleep(0.03)
        return real(requests, subnet)

    monkeypatch.setattr(reader, "answer_batch", slow)
    return seen


def make_engine(reader: Reader) -> Engine:
    scheduler = Scheduler(make_planner(), max_queue=10, max_batch_windows=1)
    executor = Executor()
    executor.reader = reader
    return Engine(scheduler, executor, Metrics([100.0], []), Limits(2000, 200))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in 10 s")


def test_a_cancelled_request_is_never_computed(reader: Reader, computed: list[str]) -> None:
    async def scenario() -> None:
        engine = make_engine(reader)
        engine.start()
        busy = asyncio.ensure_future(engine.answer("busy?", CONTEXT, LOOSE, time.perf_counter()))
        await until(lambda: engine.scheduler.running == 1)
        gone = asyncio.ensure_future(engine.answer("gone?", CONTEXT, LOOSE, time.perf_counter()))
        await until(lambda: engine.scheduler.depth == 1)
        gone.cancel()  # the client disconnected while the model was busy
        assert (await busy).answer.text
        await asyncio.sleep(0.05)
        await engine.stop()
        engine.executor.shutdown()

    asyncio.run(scenario())
    assert computed == ["busy?"]


def test_stopping_refuses_what_is_still_queued(reader: Reader) -> None:
    async def scenario() -> list[object]:
        engine = make_engine(reader)  # never started: nothing leaves the queue
        waiting = [asyncio.ensure_future(engine.answer(q, CONTEXT, LOOSE, time.perf_counter())) for q in "ab"]
        await until(lambda: engine.scheduler.depth == 2)
        await engine.stop()
        engine.executor.shutdown()
        return await asyncio.gather(*waiting, return_exceptions=True)

    assert all(isinstance(r, Overloaded) for r in asyncio.run(scenario()))


def test_a_failing_model_fails_its_batch_and_frees_the_model(reader: Reader, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(requests, subnet):  # type: ignore[no-untyped-def]
        raise RuntimeError("the model broke")

    async def scenario() -> None:
        engine = make_engine(reader)
        engine.start()
        with monkeypatch.context() as patch:
            patch.setattr(reader, "answer_batch", broken)
            with pytest.raises(RuntimeError, match="the model broke"):
                await engine.answer("when?", CONTEXT, LOOSE, time.perf_counter())
        assert engine.scheduler.running == 0 and engine.scheduler.busy_until == 0.0
        assert (await engine.answer("when?", CONTEXT, LOOSE, time.perf_counter())).answer.text
        await engine.stop()
        engine.executor.shutdown()

    asyncio.run(scenario())


def test_an_answer_says_how_it_was_served(reader: Reader) -> None:
    async def scenario() -> None:
        engine = make_engine(reader)
        engine.start()
        arrival = time.perf_counter()
        result = await engine.answer("When was the tower completed?", CONTEXT, LOOSE, arrival)
        assert result.candidate == engine.scheduler.planner.candidates[0] and result.fits and result.budget_met
        assert 0 <= result.queue_s <= result.latency_s and 0 < result.model_s <= result.latency_s
        assert CONTEXT[result.answer.start : result.answer.end] == result.answer.text
        await engine.stop()
        engine.executor.shutdown()

    asyncio.run(scenario())


def test_the_model_thread_yields_the_cpu_to_the_event_loop() -> None:
    async def scenario() -> int:
        executor = Executor(model_nice=5)
        niceness = await executor.call(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        executor.shutdown()
        return niceness

    assert asyncio.run(scenario()) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)


def test_a_batch_that_does_not_fit_the_queue_is_refused_whole(reader: Reader, computed: list[str]) -> None:
    async def scenario() -> None:
        engine = make_engine(reader)  # max_queue 10
        engine.start()
        with pytest.raises(PayloadTooLarge):  # more than the queue holds: no retry could help
            await engine.answer_all([(f"q{i}?", CONTEXT) for i in range(11)], LOOSE, time.perf_counter())
        held = [engine.scheduler.reserve() for _ in range(5)]  # others wait: room for 5 only
        with pytest.raises(Overloaded):
            await engine.answer_all([(f"q{i}?", CONTEXT) for i in range(6)], LOOSE, time.perf_counter())
        for place in held:
            place.release()  # type: ignore[union-attr]
        with pytest.raises(InvalidInput):  # one question too long: nothing of the call is queued
            await engine.answer_all([("ok?", CONTEXT), ("x" * 300, CONTEXT)], LOOSE, time.perf_counter())
        assert engine.scheduler.reserved == 0 and engine.scheduler.depth == 0
        results = await engine.answer_all([(f"q{i}?", CONTEXT) for i in range(10)], LOOSE, time.perf_counter())
        assert len(results) == 10 and engine.scheduler.reserved == 0
        await engine.stop()
        engine.executor.shutdown()

    asyncio.run(scenario())
    assert sorted(computed) == sorted(f"q{i}?" for i in range(10))
