"""Re-planning the head of the queue with the time the work behind it leaves."""

import asyncio
import math

from models.nn.subnet import SubnetConfig
from service.batcher import Batcher, WorkItem
from service.metrics import Metrics
from service.planner import Planner
from service.runtime import Job, Runtime
from service.settings import Settings
from tests.unit.service.conftest import ItemFactory


def test_the_head_is_replanned_with_the_slack_of_the_work_behind_it(item: ItemFactory) -> None:
    """Frozen clock at t=100 s; the replanned head takes a companion of its new sub-network."""
    big, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)
    asked: list[tuple[str, float]] = []
    batches: list[tuple[str, list[str]]] = []

    def replan(head: WorkItem, now: float, extra_s: float) -> tuple[SubnetConfig, float] | None:
        asked.append((head.payload, round(extra_s, 6)))
        return (big, 0.02) if head.payload == "h" else None

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[None]:
        batches.append((subnet.id, [i.payload for i in items]))
        return [None for _ in items]

    async def scenario() -> None:
        batcher = Batcher(run, max_queue=10, max_batch_windows=8, replan=replan, clock=lambda: 100.0)
        queued = [batcher.submit(item(100.03, small, "h")), batcher.submit(item(100.05, big, "w"))]
        batcher.start()
        await asyncio.gather(*queued)
        await batcher.stop()

    asyncio.run(scenario())
    # h planned to end at 100.01, w at 100.02 of its 100.05: h may run 30 ms longer than planned
    assert asked == [("h", 0.03)]
    assert batches == [("w100d100", ["h", "w"])]


def replan_runtime(planner: Planner) -> Runtime:
    runtime = Runtime(Settings())
    runtime.planner, runtime.metrics = planner, Metrics([100.0], [])
    runtime._by_subnet = {c.subnet: c for c in planner.candidates}
    return runtime


def planned(subnet: SubnetConfig, predicted_s: float, left_s: float, cap: int = 0) -> WorkItem:
    job = Job(None, None, cap, None)  # type: ignore[arg-type]  # the re-plan reads only the cap
    return WorkItem(100.0 + left_s, 0, 100.0 + left_s, subnet, 1, 100, 101.0, predicted_s, job)


def test_replanning_takes_the_time_the_queue_left_within_cap_and_slack(planner: Planner) -> None:
    """Tails at 100 tokens: big 43 ms, mid 23 ms, small 13 ms (the `planner` fixture)."""
    runtime = replan_runtime(planner)
    big, mid, small = (c.subnet for c in planner.candidates)
    up = runtime._replan(planned(small, 0.013, left_s=0.2), 100.0, extra_s=0.05)
    assert up is not None and up[0] == big and math.isclose(up[1], 0.043)
    assert runtime._replan(planned(small, 0.013, 0.2), 100.0, extra_s=0.015)[0] == mid  # type: ignore[index]
    assert runtime._replan(planned(small, 0.013, 0.2, cap=1), 100.0, extra_s=1.0)[0] == mid  # type: ignore[index]
    assert runtime._replan(planned(small, 0.013, 0.03), 100.0, extra_s=1.0)[0] == mid  # type: ignore[index]
    assert runtime._replan(planned(big, 0.043, 0.2), 100.0, extra_s=0.0) is None  # already the best
    replans = runtime.metrics.replans  # type: ignore[union-attr]
    assert replans.labels("up")._value.get() == 4 and replans.labels("down")._value.get() == 0


def test_replanning_makes_a_plan_less_accurate_only_when_it_would_end_late(planner: Planner) -> None:
    runtime = replan_runtime(planner)
    big, mid, _small = (c.subnet for c in planner.candidates)
    down = runtime._replan(planned(big, 0.043, left_s=0.03), 100.0, extra_s=1.0)
    assert down is not None and down[0] == mid
    planner.margin.margin_s = 0.01  # big no longer fits the budget less the margin, but still ends in time
    assert runtime._replan(planned(big, 0.043, left_s=0.045), 100.0, extra_s=1.0) is None
    assert runtime.metrics.replans.labels("down")._value.get() == 1  # type: ignore[union-attr]
