"""Hand-made service parts: a planner with three calibrated candidates, tickets, a scheduler at a frozen clock."""

import itertools
from collections.abc import Callable

import pytest

from models.nn.subnet import SubnetConfig
from service.budget import Budget
from service.engine.queue import Ticket
from service.engine.scheduler import BatchPlan, BatchReport, Request, Scheduler
from service.planner import Candidate, LatencyModel, Planner, Point

TicketFactory = Callable[..., Ticket]
_seq = itertools.count()


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


def make_ticket(
    deadline: float, subnet: SubnetConfig, payload: str, drop_after: float | None = None, predicted_s: float = 0.01
) -> Ticket:
    """A ticket of one 100-token window predicted at 10 ms, dropped 10 s after its deadline
    unless `drop_after` says."""
    drop = drop_after if drop_after is not None else deadline + 10
    return Ticket(deadline, next(_seq), deadline, subnet, 1, 100, drop, predicted_s, payload)


@pytest.fixture
def ticket() -> TicketFactory:
    """`ticket(deadline, subnet, payload, drop_after=None, predicted_s=0.01)`."""
    return make_ticket


def make_scheduler(planner: Planner | None = None, now: float = 100.0, **options: object) -> Scheduler:
    """A scheduler over `make_planner()` at a frozen clock; no re-planning unless asked."""
    settings: dict = {"max_queue": 10, "max_batch_windows": 8, "replan": False} | options  # type: ignore[type-arg]
    return Scheduler(planner or make_planner(), clock=lambda: now, **settings)


def request(budget_ms: float, arrival: float = 100.0, strict: bool = False, payload: object = None) -> Request:
    """A one-window request of 100 tokens."""
    return Request(Budget(budget_ms, strict, "x-latency-budget-ms"), arrival, 100, 1, payload)


def run_batches(scheduler: Scheduler, now: float, seconds: float | None = None) -> list[BatchPlan]:
    """Drain the queue as the engine would: each plan runs `seconds` (default: as predicted)
    and is reported done before the next is asked for."""
    plans = []
    while scheduler.depth:
        plan = scheduler.next_batch(now)
        if not plan.tickets:
            plans.append(plan)
            continue
        took = seconds if seconds is not None else sum(t.predicted_s for t in plan.tickets)
        now += took
        scheduler.on_batch_done(report_of(plan, took))
        plans.append(plan)
    return plans


def report_of(plan: BatchPlan, seconds: float) -> BatchReport:
    """What running `plan` took, as the executor would report it (100-token windows)."""
    assert plan.subnet is not None
    return BatchReport(plan.subnet, len(plan.tickets), sum(t.windows for t in plan.tickets), 100, seconds)
