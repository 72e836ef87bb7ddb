"""Hand-made service parts: a planner with three calibrated candidates, and queued work items."""

from collections.abc import Callable

import pytest

from models.nn.subnet import SubnetConfig
from service.batcher import WorkItem
from service.planner import Candidate, LatencyModel, Planner, Point

ItemFactory = Callable[..., WorkItem]


def make_planner() -> Planner:
    """Three candidates whose latency is 10/20/40 ms per 100 tokens at batch 1, with small spread.
    F1s 80 / 75 / 60; tails at 100 tokens: big 43 ms, mid 23 ms, small 13 ms."""
    latency = LatencyModel([100, 400], [1, 4])
    candidates = []
    for _name, (width, depth), per100, f1 in (
        ("big", (1.0, 1.0), 0.040, 80.0),
        ("mid", (0.5, 1.0), 0.020, 75.0),
        ("small", (0.25, 0.5), 0.010, 60.0),
    ):
        subnet = SubnetConfig(width, depth)
        latency.points[subnet.id] = {
            (t, b): Point(per100 * t / 100 * (b * 0.8 if b > 1 else 1), 0.001) for t in (100, 400) for b in (1, 4)
        }
        candidates.append(Candidate(subnet, f1, int(per100 * 1e9)))
    return Planner(candidates, latency, safety_factor=1.0, tail_sigmas=3.0)


@pytest.fixture
def planner() -> Planner:
    """A fresh `make_planner()` per test: tests feed it observations."""
    return make_planner()


def work_item(deadline: float, subnet: SubnetConfig, payload: str, drop_after: float | None = None) -> WorkItem:
    """A queued item predicted at 10 ms, dropped 10 s after its deadline unless `drop_after` says."""
    drop = drop_after if drop_after is not None else deadline + 10
    return WorkItem(deadline, 0, deadline, subnet, 1, 100, drop, 0.01, payload)


@pytest.fixture
def item() -> ItemFactory:
    """`item(deadline, subnet, payload, drop_after=None)`: a work item for the batcher."""
    return work_item
