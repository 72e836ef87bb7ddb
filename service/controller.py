"""The degradation level: how far below full quality load forces the service. Pure, no I/O.

Once a tick the control loop hands `tick` what it saw. The floor is the most accurate level the
arrival rate allows under `target_busy` (fractional: level k - p lets a share p of requests use
level k - 1); a step up in load restarts the rate window at once. Pressure (a queue building,
budgets missed over the window, requests shed) raises the level on top; after a run of calm ticks
it returns to the floor: quick to degrade, careful to recover. The level is exported as a metric:
the signal to scale on, since latency stays flat while accuracy is traded
(docs/journal/service-design-notes.md has the measurements behind each choice).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoadStats:
    """What one tick saw."""

    arrivals_per_s: float
    busy_fraction: float  # share of the tick the model was computing (logged, not acted on)
    queue_depth: int
    max_queue: int
    requests: int  # completed or refused in the tick
    budget_misses: int
    shed: int
    # Predicted model seconds per request at each level (its most accurate candidate, for the
    # recent requests' size), most accurate level first; empty: no floor.
    level_costs: Sequence[float] = ()


@dataclass
class Controller:
    max_level: int
    target_busy: float = 0.8  # the floor keeps rate x cost under this share of the model's time
    rate_window: int = 3  # ticks the arrival rate is averaged over
    queue_high: float = 0.25  # share of the queue cap
    miss_high: float = 0.01  # share of budgets missed over `miss_window` ticks that is pressure
    miss_window: int = 5
    recover_ticks: int = 3
    jump_sigmas: float = 3.0  # a tick this far above the window's rate (Poisson) restarts the window
    interval_s: float = 1.0  # tick length, for the Poisson spread of one tick's rate
    level: float = 0.0
    floor: float = 0.0
    calm: int = 0
    _recent: deque[tuple[int, int]] = field(default_factory=deque, repr=False)  # (requests, misses) per tick
    _rates: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.miss_window < 1 or self.recover_ticks < 1 or self.rate_window < 1:
            raise ValueError("miss_window, rate_window and recover_ticks must be at least one tick")

    def tick(self, stats: LoadStats) -> float:
        """Move the level for one tick of observations and return it."""
        self._recent.append((stats.requests, stats.budget_misses))
        while len(self._recent) > self.miss_window:
            self._recent.popleft()
        requests = sum(r for r, _ in self._recent)
        miss_rate = sum(m for _, m in self._recent) / requests if requests else 0.0
        if self._rates:
            mean = sum(self._rates) / len(self._rates)
            if stats.arrivals_per_s > mean + self.jump_sigmas * math.sqrt(max(mean, 1.0) / self.interval_s):
                self._rates.clear()  # a step up in load, not noise
        self._rates.append(stats.arrivals_per_s)
        while len(self._rates) > self.rate_window:
            self._rates.popleft()
        self.floor = self._floor(sum(self._rates) / len(self._rates), stats.level_costs)
        queue_share = stats.queue_depth / stats.max_queue if stats.max_queue else 0.0
        severe = stats.shed > 0 or queue_share >= 0.5
        pressured = severe or queue_share >= self.queue_high
        pressured = pressured or (stats.budget_misses > 0 and miss_rate > self.miss_high)
        if pressured:
            self.level = min(self.max_level, self.level + (2 if severe else 1))
            self.calm = 0
        else:
            self.calm += 1
            if self.calm >= self.recover_ticks:
                self.level = self.floor
        self.level = max(self.level, self.floor)
        return self.level

    def _floor(self, rate: float, costs: Sequence[float]) -> float:
        """The most accurate level whose predicted busy share at `rate` stays under the target,
        less the share of requests the time left under the target pays the level above for."""
        costs = costs[: self.max_level + 1]
        for level, cost in enumerate(costs):
            if rate * cost <= self.target_busy:
                if level == 0 or costs[level - 1] <= cost:
                    return float(level)
                per_request = self.target_busy / rate  # seconds each request may take on average
                share = (per_request - cost) / (costs[level - 1] - cost)
                return level - min(share, 1.0)
        return float(len(costs) - 1) if costs else 0.0
