"""The scheduler: every decision about a request between the gate and the model, in one place.

It owns the admission places (capacity counted once: queued tickets plus places the gate has
reserved for requests whose bodies are still being read), the earliest-deadline-first queue, the
controller's degradation cap, the plan made when a request arrives and the re-plan made when it
leaves the queue, and the batches. It computes nothing and awaits nothing: `add` returns a
ticket or a refusal, `next_batch(now)` says what to run next, `on_batch_done(report)` feeds back
what running it took, `served(ticket)` says how a ticket was served. Nothing here calls back up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.nn.subnet import SubnetConfig
from service.budget import Budget
from service.engine.queue import EdfQueue, Ticket, batch_time_cap, slack_after
from service.errors import BudgetBelowFloor, Overloaded, ServiceError
from service.planner import Candidate, Choice, Infeasible, Planner


@dataclass(frozen=True)
class Request:
    """A tokenised request: what planning needs, and the `payload` the executor computes."""

    budget: Budget
    arrival: float  # perf_counter seconds when the app first saw it
    tokens: int  # longest window
    windows: int
    payload: Any = None


@dataclass
class Place:
    """A queue place the gate reserved; `release` is idempotent (the gate's finally may run
    after the queue took the place over)."""

    scheduler: Scheduler
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.scheduler.reserved -= 1


@dataclass(frozen=True)
class BatchPlan:
    """What to run now: `tickets` share `subnet`; `expired` were dropped before compute.
    `replan`: "up" or "down" when the head's sub-network was chosen again."""

    subnet: SubnetConfig | None
    tickets: list[Ticket]
    expired: list[Ticket] = field(default_factory=list)
    replan: str | None = None


@dataclass(frozen=True)
class BatchReport:
    """What running a plan took, measured around the model thread's work."""

    subnet: SubnetConfig
    items: int
    windows: int
    tokens: int
    seconds: float
    failed: bool = False


@dataclass(frozen=True)
class Served:
    """How a finished ticket was served, for its response and its accounting."""

    candidate: Candidate
    fits: bool
    below_floor: bool  # nothing could meet its budget even on an idle server: not a load signal
    planned_s: float  # arrival to answer as planned
    downgraded: bool  # an idle server would have served something at least downgrade_f1 better


@dataclass
class _Arrival:
    """The plan a ticket was queued with (the scheduler's own bookkeeping per ticket)."""

    arrival: float
    candidate: Candidate
    fits: bool
    below_floor: bool
    planned_s: float
    idle: Candidate | None  # what an idle server would have chosen under the same cap


class Scheduler:
    def __init__(
        self,
        planner: Planner,
        *,
        max_queue: int,
        max_batch_windows: int,
        network_ms: float = 0.0,
        lenient_grace_ms: float = 0.0,
        replan: bool = True,
        downgrade_f1: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.planner = planner
        self.max_queue = max_queue
        self.max_batch_windows = max_batch_windows
        self.network_ms = network_ms
        self.lenient_grace_s = lenient_grace_ms / 1000
        self.replanning = replan
        self.downgrade_f1 = downgrade_f1
        self._clock = clock
        self.queue = EdfQueue()
        self._seq = 0
        self._by_subnet = {c.subnet: c for c in planner.served}
        self.reserved = 0  # places the gate holds for requests not yet queued
        self.closed: ServiceError | None = None  # the refusal every new request gets (draining)
        self.level = 0.0  # the controller's, fractional (see `cap`)
        self._dither = 0.0
        self.max_batch_s = math.inf  # companions stop joining past this predicted batch time
        self.busy_until = 0.0  # predicted end of the running batch
        self.running = 0  # tickets in the batch being computed
        self.busy_seconds = 0.0  # cumulative compute time, for the controller
        self.arrivals = 0
        self.recent_budgets: deque[float] = deque(maxlen=200)  # seconds, for the batch-time cap
        self.recent_sizes: deque[tuple[int, int]] = deque(maxlen=200)  # (tokens, windows), for level costs

    # --- admission ---------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.queue)

    def refusal(self, place: Place | None = None) -> ServiceError | None:
        """The refusal a new request gets whatever it asks (None: admit it). A request holding a
        place was counted when the place was reserved, and is not counted again."""
        if self.closed is not None:
            return self.closed
        if place is None and len(self.queue) + self.reserved >= self.max_queue:
            return Overloaded("queue full", retry_after_s=max(0.1, self.queue_wait_s()))
        return None

    def reserve(self) -> Place | ServiceError:
        """A place for a request the gate lets in before its body is read, or the refusal."""
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        self.reserved += 1
        return Place(self)

    def close(self, refusal: ServiceError) -> None:
        """From now on every new request gets `refusal`; queued and running work carries on."""
        self.closed = refusal

    def cap(self) -> int:
        """This request's level cap: a fractional level k - p gives the share p of requests the
        cap k - 1 and the rest k, spread evenly (error diffusion, no randomness to test around)."""
        k = math.ceil(self.level)
        self._dither += k - self.level
        if self._dither >= 1.0:
            self._dither -= 1.0
            return k - 1
        return k

    def budget_s(self, budget: Budget) -> float:
        """What the caller's budget leaves this process: less the network's allowance."""
        return (budget.ms - self.network_ms) / 1000

    # --- arrival -----------------------------------------------------------------------------
    def add(self, request: Request, place: Place | None = None) -> Ticket | ServiceError:
        """Plan `request` and queue it, or say why not (the refusal is returned, not raised).

        Lenient budgets that nothing fits get the sub-network quickest for the input; strict ones
        are refused: 400 below the idle floor, 503 when load is what makes them impossible."""
        if place is None:  # a place holder was admitted by the gate and by `Engine.answer` already
            refusal = self.refusal()
            if refusal is not None:
                return refusal
        self.arrivals += 1
        plan_s = self.budget_s(request.budget)
        self.recent_budgets.append(plan_s)
        self.recent_sizes.append((request.tokens, request.windows))
        now = self._clock()
        deadline = request.arrival + plan_s
        cap = self.cap()
        rank, wait, decision = self._plan(plan_s, now - request.arrival, deadline, request, cap)
        if isinstance(decision, Choice):
            candidate, fits, below_floor, predicted = decision.candidate, True, False, decision.predicted_s
        elif request.budget.strict:
            return self._strict_refusal(request, decision)
        else:
            candidate, fits, predicted = decision.fastest, False, decision.floor_s
            below_floor = decision.reason == "floor"
        idle = self.planner.choose(plan_s, now - request.arrival, 0.0, request.tokens, request.windows, cap)
        grace = 0.0 if request.budget.strict else self.lenient_grace_s
        self._seq += 1
        ticket = Ticket(
            rank, self._seq, deadline, candidate.subnet, request.windows, request.tokens, deadline + grace,
            predicted, request.payload, cap,
        )  # fmt: skip
        planned = now - request.arrival + wait + predicted
        ticket.plan = _Arrival(
            request.arrival, candidate, fits, below_floor, planned, idle.candidate if isinstance(idle, Choice) else None
        )
        self.queue.push(ticket)
        if place is not None:
            place.release()  # the queue holds the place now
        return ticket

    def _strict_refusal(self, request: Request, decision: Infeasible) -> ServiceError:
        budget = request.budget
        if decision.reason == "floor":
            network_ms = self.network_ms
            return BudgetBelowFloor(
                f"budget {budget.ms:g} ms is below {decision.floor_s * 1000 + network_ms:.1f} ms: what the quickest "
                f"sub-network ({decision.fastest.subnet.id}) needs for this input ({request.tokens} tokens, "
                f"{request.windows} window(s)) on an idle server, {decision.floor_s * 1000:.1f} ms, plus "
                f"{network_ms:g} ms for the network (DYNAQA_NETWORK_MS)"
            )
        return Overloaded(
            f"budget {budget.ms:g} ms cannot be met under the current load", retry_after_s=self.queue_wait_s()
        )

    def _plan(
        self, budget_s: float, elapsed_s: float, deadline: float, request: Request, cap: int
    ) -> tuple[float, float, Choice | Infeasible]:
        """Where the request queues (its rank), the wait predicted there, and the planner's decision.

        By deadline (EDF) it overtakes every ticket due later, and may compute only as long as
        none of them becomes late; under load those sit close to their deadlines and leave a
        newcomer only the fastest sub-network. Queued behind all of them instead, it waits longer
        but overtakes nothing: when that buys a more accurate sub-network, it goes to the back.
        """
        tokens, rows, now = request.tokens, request.windows, self._clock()
        wait = self.queue.wait_s(self.busy_until, now, deadline)
        slack = self.queue.slack_s(deadline, max(now, self.busy_until))
        decision = self.planner.choose(budget_s, elapsed_s, wait, tokens, rows, cap, slack)
        last = self.queue.last_rank()
        if last <= deadline or not isinstance(decision, Choice):
            return deadline, wait, decision
        wait_all = self.queue.wait_s(self.busy_until, now)
        behind = self.planner.choose(budget_s, elapsed_s, wait_all, tokens, rows, cap)
        if isinstance(behind, Choice) and self.planner.rank(behind.candidate) < self.planner.rank(decision.candidate):
            return math.nextafter(last, math.inf), wait_all, behind
        return deadline, wait, decision

    def queue_wait_s(self, rank: float | None = None) -> float:
        """Predicted wait before a new ticket of `rank` starts (all queued work when None)."""
        return self.queue.wait_s(self.busy_until, self._clock(), rank)

    def cancel(self, ticket: Ticket) -> None:
        """The caller left: never compute the ticket (it leaves the heap when popped)."""
        ticket.done = True

    # --- departure ---------------------------------------------------------------------------
    def next_batch(self, now: float | None = None) -> BatchPlan:
        """The head (lowest rank still reachable), re-planned now that its wait is over, and the
        queued tickets that chose the same sub-network, in rank order, up to the window cap and
        the batch-time cap and only while no ticket it goes ahead of becomes late. Tickets whose
        drop time has passed are expired, before any compute. Late lenient tickets (kept until
        their grace runs out) go only when nothing on time waits, so a backlog of late work
        cannot make every request late. Empty `tickets`: nothing to run."""
        now = self._clock() if now is None else now
        live, expired = [], []
        for ticket in self.queue.pop_all():
            (expired if ticket.drop_after < now else live).append(ticket)
        for ticket in expired:
            ticket.done = True
        if not live:
            return BatchPlan(None, [], expired)
        ordered = [t for t in live if t.deadline >= now] + [t for t in live if t.deadline < now]
        head, direction = ordered[0], None
        if self.replanning:
            direction = self.replan(head, now, slack_after(now + head.predicted_s, ordered[1:]))
        batch, windows, finish = [head], head.windows, now + head.predicted_s
        passed: list[Ticket] = []  # tickets this batch goes ahead of, in the order they will run
        for ticket in ordered[1:]:
            if (
                ticket.subnet == head.subnet
                and windows + ticket.windows <= self.max_batch_windows
                and finish + ticket.predicted_s - now <= self.max_batch_s
                and ticket.predicted_s <= slack_after(finish, passed)
            ):
                batch.append(ticket)
                windows += ticket.windows
                finish += ticket.predicted_s
            else:
                passed.append(ticket)
                self.queue.push(ticket)
        for ticket in batch:
            ticket.started_at = now
        self.busy_until, self.running = finish, len(batch)
        return BatchPlan(head.subnet, batch, expired, direction)

    def replan(self, ticket: Ticket, now: float, extra_s: float) -> str | None:
        """Choose the sub-network of the ticket about to run again, now that its wait is over;
        returns "up", "down" or None (plan kept).

        At arrival it counted the work queued ahead at its tails, so it usually starts with more
        of its budget left than planned. It now takes the most accurate candidate under its
        arrival's cap that ends by its deadline (less the plan margin) and runs at most `extra_s`
        longer than planned, so no waiting ticket becomes late. A plan is made less accurate
        only when it would now end past its deadline.
        """
        planned = self._by_subnet[ticket.subnet]
        left = ticket.deadline - now
        choice = self.planner.choose(
            left, 0.0, 0.0, ticket.tokens, ticket.windows, ticket.cap, ticket.predicted_s + extra_s
        )
        if not isinstance(choice, Choice) or choice.candidate == planned:
            return None
        if self.planner.rank(choice.candidate) < self.planner.rank(planned):
            direction = "up"
        elif ticket.predicted_s > left:
            direction = "down"
        else:
            return None
        ticket.subnet, ticket.predicted_s = choice.candidate.subnet, choice.predicted_s
        return direction

    def on_batch_done(self, report: BatchReport) -> None:
        """The running batch ended: the model is free; a batch that ran corrects the latency model."""
        self.busy_seconds += report.seconds
        self.running = 0
        self.busy_until = 0.0
        if not report.failed:
            self.planner.observe(report.subnet.id, report.tokens, report.windows, report.seconds)

    def on_sent(self, planned_s: float, actual_s: float, budget: Budget, now: float) -> None:
        """A planned request's response went out `actual_s` after arrival: the plan margin learns
        from it (the caller's clock runs until the last byte is sent, not until the model is done)."""
        self.planner.observe_plan(planned_s, actual_s, self.budget_s(budget), now)

    def refresh(self, now: float) -> None:
        """Once a control tick: the batch-time cap follows recent budgets; old overruns age out."""
        self.max_batch_s = batch_time_cap(self.recent_budgets)
        self.planner.margin.expire(now)

    def level_costs(self) -> tuple[float, ...]:
        """Predicted model seconds per request at each level (its most accurate candidate), for a
        request of the recent requests' mean size; empty before any request."""
        if not self.recent_sizes:
            return ()
        tokens = round(sum(t for t, _ in self.recent_sizes) / len(self.recent_sizes))
        windows = sum(w for _, w in self.recent_sizes) / len(self.recent_sizes)
        return tuple(self.planner.mean_s(c, tokens) * windows for c in self.planner.candidates)

    def served(self, ticket: Ticket) -> Served:
        """How a computed ticket was served: the plan that ran is the one made when it left the
        queue (with re-planning), else the one made at arrival."""
        arrival: _Arrival = ticket.plan
        candidate, fits, below_floor = arrival.candidate, arrival.fits, arrival.below_floor
        planned = arrival.planned_s
        if self.replanning:
            planned = ticket.started_at - arrival.arrival + ticket.predicted_s
        if ticket.subnet != candidate.subnet:
            candidate, fits, below_floor = self._by_subnet[ticket.subnet], True, False
        downgraded = arrival.idle is not None and self.planner.accuracy_lost(arrival.idle, candidate) >= (
            self.downgrade_f1
        )
        return Served(candidate, fits, below_floor, planned, downgraded)
