"""The batcher with a fake model function: EDF order, batches per sub-network, what is never computed."""

import asyncio
import heapq
import math
import os
import threading
import time
from dataclasses import replace

import pytest

from models.nn.subnet import SubnetConfig
from service.batcher import Batcher, WorkItem, batch_time_cap
from service.errors import Expired, Overloaded
from tests.unit.service.conftest import ItemFactory


def test_batcher_is_edf_batches_by_subnet_and_drops_expired(item: ItemFactory) -> None:
    big, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)
    batches: list[list[str]] = []

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[str]:
        batches.append([i.payload for i in items])
        time.sleep(0.02)
        return [f"{i.payload}:{subnet.id}" for i in items]

    async def scenario() -> tuple[list, list]:  # type: ignore[type-arg]
        batcher = Batcher(run, max_queue=10, max_batch_windows=8)
        batcher.start()
        now = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(item(now + 5, big, "warm")))
        await asyncio.sleep(0.005)  # the model is now busy with "warm"; the rest queue up
        tasks = [
            asyncio.ensure_future(batcher.submit(item(now + 3, big, "late-big"))),
            asyncio.ensure_future(batcher.submit(item(now + 1, small, "early-small"))),
            asyncio.ensure_future(batcher.submit(item(now + 2, small, "mid-small"))),
            asyncio.ensure_future(batcher.submit(item(now + 0.5, big, "expired", drop_after=now))),
        ]
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        await batcher.stop()
        return results, batches

    results, order = asyncio.run(scenario())
    assert order == [["warm"], ["early-small", "mid-small"], ["late-big"]]
    assert isinstance(results[4], Expired)
    assert results[2] == "early-small:w25d50"


def test_a_companion_joins_a_batch_only_if_no_item_it_overtakes_becomes_late(item: ItemFactory) -> None:
    big, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)

    def order(companion_s: float) -> list[list[str]]:
        batches: list[list[str]] = []

        def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[None]:
            batches.append([i.payload for i in items])
            time.sleep(0.05 if items[0].payload == "warm" else 0.0)
            return [None for _ in items]

        async def scenario() -> None:
            batcher = Batcher(run, max_queue=10, max_batch_windows=8)
            batcher.start()
            now = time.perf_counter()
            first = asyncio.ensure_future(batcher.submit(item(now + 5, big, "warm")))
            await asyncio.sleep(0.005)  # the model is busy with "warm" for 50 ms
            rest = [
                replace(item(now + 0.2, big, "A"), predicted_s=0.05),
                replace(item(now + 0.25, small, "B"), predicted_s=0.05),
                replace(item(now + 2.0, big, "C"), predicted_s=companion_s),
            ]
            await asyncio.gather(first, *(batcher.submit(i) for i in rest))
            await batcher.stop()

        asyncio.run(scenario())
        return batches

    # C batched with A would push B (due 250 ms, on time by prediction) past its deadline: C waits.
    assert order(companion_s=0.2) == [["warm"], ["A"], ["B"], ["C"]]
    # A short companion leaves B on time: batched as before.
    assert order(companion_s=0.01) == [["warm"], ["A", "C"], ["B"]]


def test_batches_stop_growing_at_half_the_tight_budgets(item: ItemFactory) -> None:
    assert batch_time_cap([]) == math.inf
    budgets = [0.134] * 10 + [0.334] * 190  # 5% of the budgets are 134 ms
    assert math.isclose(batch_time_cap(budgets), 0.067)

    batches: list[list[str]] = []

    async def scenario() -> None:
        batcher = Batcher(lambda s, items: batches.append([i.payload for i in items]) or [None] * len(items), 10, 8)
        batcher.max_batch_s = 0.025
        queued = [batcher.submit(item(time.perf_counter() + 5 + i, SubnetConfig(), str(i))) for i in range(5)]
        batcher.start()  # five 10 ms items of one sub-network queued before the loop runs
        await asyncio.gather(*queued)
        await batcher.stop()

    asyncio.run(scenario())
    assert batches == [["0", "1"], ["2", "3"], ["4"]]  # a third 10 ms item would pass 25 ms


def test_batcher_refuses_fast_when_full(item: ItemFactory) -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda s, items: [time.sleep(0.05) or 1 for _ in items], max_queue=2, max_batch_windows=1)
        batcher.start()
        now = time.perf_counter()
        tasks = [asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "running")))]
        await asyncio.sleep(0.01)  # now computing; two more fill the queue
        tasks += [asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), str(i)))) for i in range(2)]
        await asyncio.sleep(0.001)
        began = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(item(now + 5, SubnetConfig(), "x"))
        assert time.perf_counter() - began < 0.01 and refused.value.retry_after_s
        assert await asyncio.gather(*tasks) == [1, 1, 1]
        await batcher.stop()

    asyncio.run(scenario())


def test_the_model_thread_yields_the_cpu_to_the_event_loop(item: ItemFactory) -> None:
    def niceness(subnet: SubnetConfig, items: list[WorkItem]) -> list[int]:
        return [os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) for _ in items]

    async def scenario() -> int:
        batcher = Batcher(niceness, max_queue=2, max_batch_windows=1, model_nice=5)
        batcher.start()
        result = await batcher.submit(item(time.perf_counter() + 5, SubnetConfig(), "a"))
        await batcher.stop()
        return result  # type: ignore[no-any-return]

    assert asyncio.run(scenario()) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)


def test_a_cancelled_request_is_never_computed(item: ItemFactory) -> None:
    computed: list[str] = []

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[str]:
        computed.extend(i.payload for i in items)
        time.sleep(0.03)
        return [i.payload for i in items]

    async def scenario() -> None:
        batcher = Batcher(run, max_queue=10, max_batch_windows=1)
        batcher.start()
        now = time.perf_counter()
        busy = asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "busy")))
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "gone")))
        await asyncio.sleep(0.001)
        gone.cancel()  # the client disconnected
        await busy
        await asyncio.sleep(0.05)
        await batcher.stop()

    asyncio.run(scenario())
    assert computed == ["busy"]


def test_late_lenient_work_yields_to_work_that_can_still_make_it(item: ItemFactory) -> None:
    order: list[str] = []

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[str]:
        order.extend(i.payload for i in items)
        time.sleep(0.02)
        return [i.payload for i in items]

    async def scenario() -> None:
        batcher = Batcher(run, max_queue=10, max_batch_windows=1)
        batcher.start()
        now = time.perf_counter()
        busy = asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "busy")))
        await asyncio.sleep(0.005)
        late = asyncio.ensure_future(batcher.submit(item(now - 0.1, SubnetConfig(), "late", drop_after=now + 5)))
        on_time = asyncio.ensure_future(batcher.submit(item(now + 1, SubnetConfig(), "on-time")))
        await asyncio.gather(busy, late, on_time)
        await batcher.stop()

    asyncio.run(scenario())
    assert order == ["busy", "on-time", "late"]


def test_an_item_queued_behind_is_served_last_but_judged_by_its_own_deadline(item: ItemFactory) -> None:
    async def scenario() -> tuple[float, float, float, list[str]]:
        order: list[str] = []
        batcher = Batcher(lambda s, items: [order.append(i.payload) for i in items], max_queue=10, max_batch_windows=1)
        now = time.perf_counter()
        loop = asyncio.get_running_loop()
        for name, deadline in (("a", 1.0), ("b", 3.0)):
            queued = item(now + deadline, SubnetConfig(), name)
            queued.future = loop.create_future()
            heapq.heappush(batcher._heap, queued)
        # due at +2 s but queued behind b (due at +3 s): served after both, still due at +2 s
        behind = item(now + 2.0, SubnetConfig(), "behind")
        behind.rank, behind.future = math.nextafter(batcher.last_rank(), math.inf), loop.create_future()
        heapq.heappush(batcher._heap, behind)
        # a newcomer due at +1.5 s overtakes b and `behind`: behind's own deadline (+2 s, finish
        # +0.03 s) bounds its slack, not its rank
        slack = batcher.slack_s(now + 1.5) - (now + 2.0 - time.perf_counter())
        wait_at_rank, last = batcher.queue_wait_s(now + 1.5), batcher.last_rank()
        batcher.start()
        await asyncio.sleep(0.1)
        await batcher.stop()
        return slack, wait_at_rank, last - (now + 3.0), order

    slack_error, wait_at_rank, last_offset, order = asyncio.run(scenario())
    assert order == ["a", "b", "behind"]
    assert -0.04 < slack_error < 0  # 2 s less the 0.03 s of work ahead (rank would give ~3 s)
    assert math.isclose(wait_at_rank, 0.01) and 0 < last_offset < 1e-6
