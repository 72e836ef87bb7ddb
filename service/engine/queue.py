"""The earliest-deadline-first queue of tickets, and the arithmetic of making nobody late.

Tickets are served in `rank` order: the deadline (EDF), or the end of the queue for a ticket that
chose to wait behind the queued work instead of overtaking it (`Scheduler.add`). A ticket that is
done (answered, expired or cancelled) stays in the heap until popped: it still counts in the
queue's length (depth, capacity) but in no wait, slack or batch.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.nn.subnet import SubnetConfig


@dataclass(order=True)
class Ticket:
    """One queued request as the scheduler sees it; `payload` is what the executor computes."""

    rank: float  # the queue's order: the deadline, or later for a ticket queued behind
    seq: int
    deadline: float = field(compare=False)  # perf_counter seconds at which the budget ends
    subnet: SubnetConfig = field(compare=False)
    windows: int = field(compare=False)  # model rows this ticket needs
    tokens: int = field(compare=False)  # longest window, for the latency model
    drop_after: float = field(compare=False)  # past this, drop instead of computing
    predicted_s: float = field(compare=False)  # predicted (tail) service time, for queue-wait estimates
    payload: Any = field(compare=False, default=None)
    cap: int = field(compare=False, default=0)  # the degradation cap it arrived under
    plan: Any = field(compare=False, default=None, repr=False)  # the scheduler's record of its arrival plan
    started_at: float = field(compare=False, default=0.0)
    done: bool = field(compare=False, default=False)  # answered, expired or cancelled


def batch_time_cap(budgets: Sequence[float], share: float = 0.5, quantile: float = 0.05) -> float:
    """Longest predicted batch worth starting: `share` of a low quantile of recent budgets.

    A running batch cannot be preempted, so a tight request arriving as it starts waits all of
    it; batching buys no throughput on a CPU whose per-item time is flat in the batch size.
    Infinite until any budget has been seen.
    """
    if not budgets:
        return math.inf
    ordered = sorted(budgets)
    return share * ordered[max(1, math.ceil(quantile * len(ordered))) - 1]  # nearest rank


def slack_after(finish: float, waiting: Iterable[Ticket]) -> float:
    """How much later than `finish` the `waiting` tickets (in the order they will run) may all
    start without one of them becoming late; infinite when none would be on time anyway.

    Only a ticket on time by predicted tails counts: one that is late already constrains nothing.
    """
    slack = math.inf
    for ticket in waiting:
        finish += ticket.predicted_s
        if ticket.deadline >= finish:
            slack = min(slack, ticket.deadline - finish)
    return slack


class EdfQueue:
    """A heap of tickets by rank, with the waits and slacks the planner asks about."""

    def __init__(self) -> None:
        self._heap: list[Ticket] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, ticket: Ticket) -> None:
        heapq.heappush(self._heap, ticket)

    def live(self) -> list[Ticket]:
        return [t for t in self._heap if not t.done]

    def wait_s(self, busy_until: float, now: float, rank: float | None = None) -> float:
        """Predicted wait before a new ticket of `rank` starts: the running batch's rest plus the
        queued work served before it (all of it when `rank` is None)."""
        ahead = (t.predicted_s for t in self.live() if rank is None or t.rank <= rank)
        return max(0.0, busy_until - now) + sum(ahead)

    def last_rank(self) -> float:
        """The rank of the last ticket queued (-inf when none): one ranked after it overtakes nothing."""
        return max((t.rank for t in self.live()), default=-math.inf)

    def slack_s(self, rank: float, start: float) -> float:
        """How long a new ticket of `rank` may compute without making a queued ticket late, when
        the model is free from `start` on. It runs before every ticket ranked after it, so its
        service time delays all of them. Infinite when none wait."""
        queued = sorted(self.live())
        ahead = sum(t.predicted_s for t in queued if t.rank <= rank)
        return slack_after(start + ahead, (t for t in queued if t.rank > rank))

    def pop_all(self) -> list[Ticket]:
        """Every ticket not done, in rank order; the heap is left empty."""
        popped = [heapq.heappop(self._heap) for _ in range(len(self._heap))]
        return [t for t in popped if not t.done]

    def drain(self) -> list[Ticket]:
        """Remove and return every ticket not done (shutdown)."""
        left = self.live()
        self._heap.clear()
        return left
