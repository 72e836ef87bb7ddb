"""The degradation level: how far below full quality load forces the service. Pure, no I/O.

Once a second the app hands `tick` what it saw in that second. Pressure (the model busy almost all
the time with work waiting, a queue building up, budgets missed more often than the target allows,
requests shed) raises the level at once; only a run of calm ticks lowers it: quick to degrade,
careful to recover.

Busy time protects accuracy, not only budgets: a level too high for the load lets the most accurate
candidates lengthen the queue, and the tight budgets behind them fall to the smallest sub-networks
(2x load test: level 2 served F1 59.6, level 3 63.8, both meeting 99% of budgets). Raising the level
on those load downgrades directly was tried and dropped: they come from queued work's slack as much
as from the cap, so a lower cap did not stop them and the level ran up to 6 (F1 60.2); they are a
metric instead. Busy time is averaged over a few ticks: a second of Poisson arrivals at 24/s carries
+-20% of noise, and with one-tick busy at 0.85 a server working steadily near 0.85 crossed it every
few seconds and sat a level lower than its load needed (session 6: served F1 54 instead of 65). A
real overload still shows within a tick as a queue or as misses. Work waiting counts if any tick of
the window saw it: one sample of the queue a second often finds it empty even at 0.95 busy.

Misses count over the last few ticks, not one: a single miss in a second of 20 requests is 5%, yet
one in five seconds is within a 99% target and is no reason to degrade.

A recovery step goes up one level of quality, or further when the load just measured would fit a
better level: busy time scales with the cost of what is served, so busy x cost(better) /
cost(current) predicts the better level's busy fraction, and the step goes to the most accurate
level predicted to stay calm. Recovery from a burst then takes a few ticks instead of one per level.
The level caps the planner (level k excludes the k most accurate candidates), and it is exported as
a metric: the signal to scale the fleet on, since latency alone stays flat while accuracy is being
traded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoadStats:
    """What one tick saw."""

    arrivals_per_s: float
    busy_fraction: float  # share of the tick the model was computing
    queue_depth: int
    max_queue: int
    requests: int  # completed or refused in the tick
    budget_misses: int
    shed: int


@dataclass
class Controller:
    max_level: int
    busy_high: float = 0.9
    busy_low: float = 0.75
    busy_window: int = 3  # ticks the busy fraction is averaged over
    queue_high: float = 0.25  # share of the queue cap
    miss_high: float = 0.01  # share of budgets missed over `miss_window` ticks that is pressure
    miss_window: int = 5
    recover_ticks: int = 3
    # Relative cost of serving at each level (most accurate first, e.g. predicted seconds per
    # request); empty: recover one level at a time.
    costs: tuple[float, ...] = ()
    level: int = 0
    calm: int = 0
    _recent: deque[tuple[int, int]] = field(default_factory=deque, repr=False)  # (requests, misses) per tick
    _busy: deque[tuple[float, int]] = field(default_factory=deque, repr=False)  # (busy, queue) per tick

    def __post_init__(self) -> None:
        if self.miss_window < 1 or self.recover_ticks < 1 or self.busy_window < 1:
            raise ValueError("miss_window, busy_window and recover_ticks must be at least one tick")

    def tick(self, stats: LoadStats) -> int:
        """Move the level for one tick of observations and return it."""
        self._recent.append((stats.requests, stats.budget_misses))
        while len(self._recent) > self.miss_window:
            self._recent.popleft()
        requests = sum(r for r, _ in self._recent)
        miss_rate = sum(m for _, m in self._recent) / requests if requests else 0.0
        self._busy.append((stats.busy_fraction, stats.queue_depth))
        while len(self._busy) > self.busy_window:
            self._busy.popleft()
        busy_fraction = sum(b for b, _ in self._busy) / len(self._busy)
        waiting = any(q > 0 for _, q in self._busy)
        queue_share = stats.queue_depth / stats.max_queue if stats.max_queue else 0.0
        severe = stats.shed > 0 or queue_share >= 0.5
        # A busy model with an empty queue is well used, not overloaded: busy counts only with a queue.
        busy = busy_fraction >= self.busy_high and waiting
        pressured = severe or busy or queue_share >= self.queue_high
        pressured = pressured or (stats.budget_misses > 0 and miss_rate > self.miss_high)
        calm = stats.queue_depth == 0 and stats.budget_misses == 0
        if pressured:
            self.level = min(self.max_level, self.level + (2 if severe else 1))
            self.calm = 0
        elif calm and busy_fraction <= self.busy_low:
            self.calm += 1
            if self.calm >= self.recover_ticks and self.level > 0:
                self.level = self._recovered_level(busy_fraction)
                self.calm = 0
        else:
            self.calm = 0
        return self.level

    def _recovered_level(self, busy_fraction: float) -> int:
        """The most accurate level predicted to stay calm at the measured load; at least one up."""
        one_up = self.level - 1
        if len(self.costs) <= self.level or self.costs[self.level] <= 0:
            return one_up
        for better in range(one_up):  # most accurate first
            if busy_fraction * self.costs[better] / self.costs[self.level] <= self.busy_low:
                return better
        return one_up
