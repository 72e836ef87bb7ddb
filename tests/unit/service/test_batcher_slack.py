"""Slack and queue wait: how much time queued work can spare a newcomer, and how long it waits."""

import asyncio
import math
import time

from models.nn.subnet import SubnetConfig
from service.batcher import Batcher, slack_after
from service.errors import Overloaded
from tests.unit.service.conftest import ItemFactory


def test_only_an_item_that_was_on_time_counts_as_made_late(item: ItemFactory) -> None:
    waiting = [item(1.0, SubnetConfig(), "x"), item(0.5, SubnetConfig(), "late anyway")]  # 10 ms each
    assert math.isclose(slack_after(0.95, waiting[:1]), 0.04)  # x ends at 0.96: 50 ms more would end at 1.01
    assert math.isclose(slack_after(0.90, waiting[:1]), 0.09)
    assert slack_after(0.95, waiting[1:]) == math.inf  # due 0.5: late with or without more ahead of it
    assert math.isclose(slack_after(0.95, waiting), 0.04)


def test_batcher_slack_is_what_work_due_later_can_spare(item: ItemFactory) -> None:
    """Queued (never started) items of 10 ms each, at a frozen clock of t=100 s."""

    async def scenario() -> None:
        batcher = Batcher(lambda s, items: [1 for _ in items], max_queue=10, max_batch_windows=1, clock=lambda: 100.0)
        queued = [
            asyncio.ensure_future(batcher.submit(item(deadline, SubnetConfig(), str(deadline))))
            for deadline in (100.005, 100.025, 100.05)  # EDF finishes: 100.01 (late already), 100.02, 100.03
        ]
        await asyncio.sleep(0)
        assert math.isclose(batcher.slack_s(100.0), 0.005)  # the late item constrains nothing
        assert math.isclose(batcher.slack_s(100.03), 0.02)  # only the last one runs after it
        assert batcher.slack_s(100.1) == math.inf
        await batcher.stop()
        assert all(isinstance(r, Overloaded) for r in await asyncio.gather(*queued, return_exceptions=True))

    asyncio.run(scenario())


def test_queue_wait_counts_only_work_served_first(item: ItemFactory) -> None:
    async def scenario() -> tuple[float, float]:
        batcher = Batcher(lambda s, items: [None for _ in items], max_queue=10, max_batch_windows=1)
        now = time.perf_counter()
        for deadline in (1, 2, 3):  # queued, not started (no loop task): predicted 0.01 s each
            await_item = item(now + deadline, SubnetConfig(), "x")
            await_item.future = asyncio.get_running_loop().create_future()
            batcher._heap.append(await_item)
        return batcher.queue_wait_s(now + 1.5), batcher.queue_wait_s()

    early, everything = asyncio.run(scenario())
    assert math.isclose(early, 0.01) and math.isclose(everything, 0.03)
