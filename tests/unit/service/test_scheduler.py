"""The scheduler alone, at a frozen clock with hand-made tickets and batch reports: queue order,
batches, expiry, slack, re-planning, admission places and level caps. No model, no event loop."""

import math
import time

from models.nn.subnet import SubnetConfig
from service.engine.queue import Ticket, batch_time_cap, slack_after
from service.errors import BudgetBelowFloor, Draining, Overloaded
from service.planner import Planner
from tests.unit.service.conftest import TicketFactory, make_scheduler, report_of, request, run_batches

BIG, SMALL = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)


def payloads(plans: list) -> list[list[str]]:  # type: ignore[type-arg]
    return [[t.payload for t in plan.tickets] for plan in plans if plan.tickets]


def test_the_queue_is_edf_batches_by_subnet_and_drops_expired(ticket: TicketFactory) -> None:
    now = 100.0
    scheduler = make_scheduler()
    scheduler.queue.push(ticket(now + 5, BIG, "warm"))
    first = scheduler.next_batch(now)  # the model is now busy with "warm"; the rest queue up
    for t in (
        ticket(now + 3, BIG, "late-big"),
        ticket(now + 1, SMALL, "early-small"),
        ticket(now + 2, SMALL, "mid-small"),
        ticket(now + 0.5, BIG, "expired", drop_after=now),
    ):
        scheduler.queue.push(t)
    scheduler.on_batch_done(report_of(first, 0.02))
    plans = run_batches(scheduler, now + 0.02)
    assert payloads([first, *plans]) == [["warm"], ["early-small", "mid-small"], ["late-big"]]
    assert [t.payload for t in plans[0].expired] == ["expired"] and plans[0].expired[0].done
    assert plans[0].subnet is not None and plans[0].subnet.id == "w25d50"


def test_a_companion_joins_a_batch_only_if_no_ticket_it_overtakes_becomes_late(ticket: TicketFactory) -> None:
    def order(companion_s: float) -> list[list[str]]:
        now = 100.0
        scheduler = make_scheduler()
        scheduler.queue.push(ticket(now + 5, BIG, "warm"))
        warm = scheduler.next_batch(now)  # busy for 50 ms
        scheduler.queue.push(ticket(now + 0.2, BIG, "A", predicted_s=0.05))
        scheduler.queue.push(ticket(now + 0.25, SMALL, "B", predicted_s=0.05))
        scheduler.queue.push(ticket(now + 2.0, BIG, "C", predicted_s=companion_s))
        scheduler.on_batch_done(report_of(warm, 0.05))
        return payloads([warm, *run_batches(scheduler, now + 0.05)])

    # C batched with A would push B (due 250 ms, on time by prediction) past its deadline: C waits.
    assert order(companion_s=0.2) == [["warm"], ["A"], ["B"], ["C"]]
    # A short companion leaves B on time: batched as before.
    assert order(companion_s=0.01) == [["warm"], ["A", "C"], ["B"]]


def test_batches_stop_growing_at_half_the_tight_budgets(ticket: TicketFactory) -> None:
    assert batch_time_cap([]) == math.inf
    budgets = [0.134] * 10 + [0.334] * 190  # 5% of the budgets are 134 ms
    assert math.isclose(batch_time_cap(budgets), 0.067)
    scheduler = make_scheduler()
    scheduler.max_batch_s = 0.025
    for i in range(5):  # five 10 ms tickets of one sub-network
        scheduler.queue.push(ticket(100.0 + 5 + i, SubnetConfig(), str(i)))
    assert payloads(run_batches(scheduler, 100.0)) == [["0", "1"], ["2", "3"], ["4"]]  # a third would pass 25 ms


def test_only_a_ticket_that_was_on_time_counts_as_made_late(ticket: TicketFactory) -> None:
    waiting = [ticket(1.0, SubnetConfig(), "x"), ticket(0.5, SubnetConfig(), "late anyway")]  # 10 ms each
    assert math.isclose(slack_after(0.95, waiting[:1]), 0.04)  # x ends at 0.96: 50 ms more would end at 1.01
    assert math.isclose(slack_after(0.90, waiting[:1]), 0.09)
    assert slack_after(0.95, waiting[1:]) == math.inf  # due 0.5: late with or without more ahead of it
    assert math.isclose(slack_after(0.95, waiting), 0.04)


def test_the_head_is_replanned_with_the_slack_of_the_work_behind_it(ticket: TicketFactory) -> None:
    """h (small, planned 10 ms) may run 67 ms longer than planned without making w late: it is
    re-planned to the full model, and w, of that sub-network, joins its batch."""
    scheduler = make_scheduler(replan=True)
    scheduler.queue.push(ticket(100.06, SMALL, "h"))
    scheduler.queue.push(ticket(100.12, BIG, "w", predicted_s=0.043))
    plan = scheduler.next_batch(100.0)
    assert plan.replan == "up" and plan.subnet == BIG and payloads([plan]) == [["h", "w"]]
    assert math.isclose(plan.tickets[0].predicted_s, 0.043)


def planned(subnet: SubnetConfig, predicted_s: float, left_s: float, cap: int = 0) -> Ticket:
    return Ticket(100.0 + left_s, 0, 100.0 + left_s, subnet, 1, 100, 101.0, predicted_s, None, cap)


def test_replanning_takes_the_time_the_queue_left_within_cap_and_slack(planner: Planner) -> None:
    """Tails at 100 tokens: big 43 ms, mid 23 ms, small 13 ms (make_planner)."""
    scheduler = make_scheduler(planner)
    big, mid, small = (c.subnet for c in planner.candidates)
    up = planned(small, 0.013, left_s=0.2)
    assert scheduler.replan(up, 100.0, extra_s=0.05) == "up"
    assert up.subnet == big and math.isclose(up.predicted_s, 0.043)
    for ticket, extra_s in (
        (planned(small, 0.013, 0.2), 0.015),  # the slack left allows mid, not big
        (planned(small, 0.013, 0.2, cap=1), 1.0),  # its arrival's cap excludes big
        (planned(small, 0.013, 0.03), 1.0),  # the time left allows mid
    ):
        assert scheduler.replan(ticket, 100.0, extra_s) == "up" and ticket.subnet == mid
    best = planned(big, 0.043, 0.2)
    assert scheduler.replan(best, 100.0, extra_s=0.0) is None and best.subnet == big  # already the best


def test_replanning_makes_a_plan_less_accurate_only_when_it_would_end_late(planner: Planner) -> None:
    scheduler = make_scheduler(planner)
    big, mid, _small = (c.subnet for c in planner.candidates)
    down = planned(big, 0.043, left_s=0.03)
    assert scheduler.replan(down, 100.0, extra_s=1.0) == "down" and down.subnet == mid
    planner.margin.margin_s = 0.01  # big no longer fits the budget less the margin, but still ends in time
    kept = planned(big, 0.043, left_s=0.045)
    assert scheduler.replan(kept, 100.0, extra_s=1.0) is None and kept.subnet == big


def test_queue_slack_is_what_work_due_later_can_spare(ticket: TicketFactory) -> None:
    """Queued (never started) tickets of 10 ms each, the model free from t=100 s."""
    scheduler = make_scheduler()
    for deadline in (100.005, 100.025, 100.05):  # EDF finishes: 100.01 (late already), 100.02, 100.03
        scheduler.queue.push(ticket(deadline, SubnetConfig(), str(deadline)))
    queue = scheduler.queue
    assert math.isclose(queue.slack_s(100.0, 100.0), 0.005)  # the late ticket constrains nothing
    assert math.isclose(queue.slack_s(100.03, 100.0), 0.02)  # only the last one runs after it
    assert queue.slack_s(100.1, 100.0) == math.inf
    assert len(queue.drain()) == 3 and not len(queue)


def test_late_lenient_work_yields_to_work_that_can_still_make_it(ticket: TicketFactory) -> None:
    scheduler = make_scheduler(max_batch_windows=1)
    now = 100.0
    scheduler.queue.push(ticket(now - 0.1, SubnetConfig(), "late", drop_after=now + 5))
    scheduler.queue.push(ticket(now + 1, SubnetConfig(), "on-time"))
    assert payloads(run_batches(scheduler, now, seconds=0.02)) == [["on-time"], ["late"]]


def test_queue_wait_counts_only_work_served_first(ticket: TicketFactory) -> None:
    scheduler = make_scheduler()
    for deadline in (1, 2, 3):  # queued, not started: predicted 0.01 s each
        scheduler.queue.push(ticket(100.0 + deadline, SubnetConfig(), "x"))
    assert math.isclose(scheduler.queue_wait_s(101.5), 0.01) and math.isclose(scheduler.queue_wait_s(), 0.03)


def test_a_ticket_queued_behind_is_served_last_but_judged_by_its_own_deadline(ticket: TicketFactory) -> None:
    now = 100.0
    scheduler = make_scheduler(now=now, max_batch_windows=1)
    queue = scheduler.queue
    for name, deadline in (("a", 1.0), ("b", 3.0)):
        queue.push(ticket(now + deadline, SubnetConfig(), name))
    # due at +2 s but queued behind b (due at +3 s): served after both, still due at +2 s
    behind = ticket(now + 2.0, SubnetConfig(), "behind")
    behind.rank = math.nextafter(queue.last_rank(), math.inf)
    queue.push(behind)
    # a newcomer due at +1.5 s overtakes b and `behind`: behind's own deadline (+2 s, finish
    # +0.03 s) bounds its slack, not its rank
    slack_error = queue.slack_s(now + 1.5, now) - 2.0
    wait_at_rank, last_offset = scheduler.queue_wait_s(now + 1.5), queue.last_rank() - (now + 3.0)
    assert payloads(run_batches(scheduler, now)) == [["a"], ["b"], ["behind"]]
    assert -0.04 < slack_error < 0  # 2 s less the 0.03 s of work ahead (rank would give ~3 s)
    assert math.isclose(wait_at_rank, 0.01) and 0 < last_offset < 1e-6


def test_a_full_queue_refuses_fast() -> None:
    scheduler = make_scheduler(max_queue=2, max_batch_windows=1)
    assert isinstance(scheduler.add(request(5000)), Ticket)
    assert scheduler.next_batch(100.0).tickets and scheduler.running == 1  # computing: it holds no place
    assert all(isinstance(scheduler.add(request(5000)), Ticket) for _ in range(2))  # these fill the queue
    began = time.perf_counter()
    refused = scheduler.add(request(5000))
    assert time.perf_counter() - began < 0.01
    assert isinstance(refused, Overloaded) and refused.retry_after_s and scheduler.depth == 2


def test_admitted_requests_hold_their_queue_place_until_queued() -> None:
    """The gate's places count against the queue cap, so a request it admitted is never refused
    for a full queue once its body is parsed, and the cap is never exceeded."""
    scheduler = make_scheduler(max_queue=2)
    first, second = scheduler.reserve(), scheduler.reserve()
    assert isinstance(scheduler.refusal(), Overloaded)  # both places taken, nothing queued yet
    assert scheduler.refusal(first) is None  # type: ignore[arg-type]  # the admitted ones go on
    second.release()  # type: ignore[union-attr]
    second.release()  # type: ignore[union-attr]  # idempotent: the gate's finally may run after the queue took it
    assert scheduler.reserved == 1 and scheduler.refusal() is None
    assert isinstance(scheduler.add(request(5000), first), Ticket)  # type: ignore[arg-type]
    assert (scheduler.reserved, scheduler.depth) == (0, 1)
    first.release()  # type: ignore[union-attr]
    assert scheduler.reserved == 0
    third = scheduler.reserve()
    assert isinstance(scheduler.refusal(), Overloaded)  # one queued + one reserved = the cap
    third.release()  # type: ignore[union-attr]


def test_a_closed_scheduler_refuses_with_its_reason_and_keeps_its_queue() -> None:
    scheduler = make_scheduler()
    assert isinstance(scheduler.add(request(5000)), Ticket)
    scheduler.close(Draining("the replica is draining"))
    assert isinstance(scheduler.reserve(), Draining) and isinstance(scheduler.add(request(5000)), Draining)
    assert scheduler.depth == 1 and len(run_batches(scheduler, 100.0)) == 1


def test_strict_budgets_are_refused_by_what_makes_them_impossible(planner: Planner) -> None:
    """Below the idle floor: 400 naming it; possible when idle but not behind the queue: 503."""
    scheduler = make_scheduler(planner)
    floor = scheduler.add(request(5, strict=True))
    assert isinstance(floor, BudgetBelowFloor) and "w25d50" in str(floor)
    for _ in range(5):
        scheduler.add(request(5000))
    assert len(scheduler.next_batch(100.0).tickets) == 5  # the model is busy for 215 ms
    loaded = scheduler.add(request(30, strict=True))
    assert isinstance(loaded, Overloaded) and "current load" in str(loaded)
    lenient = scheduler.add(request(30))
    assert isinstance(lenient, Ticket) and lenient.subnet == SMALL  # the quickest, answered late
    assert scheduler.arrivals == 8


def test_a_fractional_level_spreads_its_two_caps_over_requests() -> None:
    scheduler = make_scheduler()
    scheduler.level = 2.25  # a quarter at cap 3, three quarters at cap 2
    caps = [scheduler.cap() for _ in range(100)]
    assert caps.count(2) == 75 and caps.count(3) == 25 and caps[:4] == [3, 2, 2, 2]
    scheduler.level = 4.0
    assert {scheduler.cap() for _ in range(10)} == {4}
