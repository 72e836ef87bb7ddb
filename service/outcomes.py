"""How requests ended: the Prometheus counters, and the running totals the control loop reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.metrics import Metrics

if TYPE_CHECKING:
    from service.engine.engine import Result


class Outcomes:
    """Counts every finished request once, whichever layer finished it (gate, handler, route)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.answered = 0
        self.misses = 0  # budgets missed because of load (below-floor budgets are the caller's choice)
        self.shed = 0

    def record(self, outcome: str, latency_s: float, result: Result | None = None) -> None:
        m = self.metrics
        m.requests.labels(outcome).inc()
        m.request_seconds.labels(outcome).observe(latency_s)
        if outcome == "shed":
            self.shed += 1
        if result is None:
            return
        self.answered += 1
        m.budget.labels("met" if result.budget_met else "missed").inc()
        if not result.budget_met and not result.below_floor:  # the controller's load signal
            self.misses += 1
        m.budget_seconds.observe(result.budget.ms / 1000)
        m.subnet.labels(result.candidate.subnet.id).inc()
        m.queue_seconds.observe(max(0.0, result.queue_s))
        if result.candidate.expected_f1 is not None:
            m.expected_f1.observe(result.candidate.expected_f1)
