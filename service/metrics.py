"""Prometheus metrics (prefix dynaqa_, seconds, counters end in _total, bounded labels).

One registry per app, so tests can run several apps in one process. The request latency
histogram has a bucket edge exactly at every configured SLO threshold, so attainment computed from
buckets is exact, not interpolated.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("ok", "degraded", "shed", "expired", "error", "rejected", "cancelled")


def latency_buckets(slo_thresholds_ms: list[float]) -> list[float]:
    base = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0]
    return sorted(set(base) | {ms / 1000 for ms in slo_thresholds_ms})


class Metrics:
    def __init__(self, slo_thresholds_ms: list[float], subnet_ids: list[str]) -> None:
        self.registry = CollectorRegistry()
        self._requests(latency_buckets(slo_thresholds_ms))
        self._serving()
        self._replica()
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        for direction in ("up", "down"):
            self.replans.labels(direction)
        for result in ("met", "missed"):
            self.budget.labels(result)
        for subnet_id in subnet_ids:
            self.subnet.labels(subnet_id)

    def _requests(self, buckets: list[float]) -> None:
        """What each request saw: latency, queue wait, budget, outcome, who answered."""
        r = self.registry
        self.request_seconds = Histogram(
            "dynaqa_request_duration_seconds",
            "Time from arrival to response of POST /v1/qa, by outcome.",
            ["outcome"],
            buckets=buckets,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "dynaqa_queue_wait_seconds",
            "Time from arrival to the start of compute.",
            registry=r,
            buckets=buckets,
        )
        self.model_seconds = Histogram(
            "dynaqa_model_batch_duration_seconds",
            "Forward time of one micro-batch.",
            registry=r,
            buckets=buckets,
        )
        self.requests = Counter("dynaqa_requests_total", "Requests by outcome.", ["outcome"], registry=r)
        self.budget = Counter("dynaqa_budget_total", "Answered requests by budget result.", ["result"], registry=r)
        self.budget_seconds = Histogram(
            "dynaqa_request_budget_seconds",
            "Latency budgets requested.",
            registry=r,
            buckets=buckets,
        )
        self.subnet = Counter(
            "dynaqa_subnet_requests_total", "Requests served per sub-network.", ["subnet"], registry=r
        )
        self.expected_f1 = Histogram(
            "dynaqa_served_expected_f1",
            "Expected F1 (eval split) of the sub-network that answered.",
            registry=r,
            buckets=[10, 20, 30, 40, 50, 55, 60, 65, 70, 75, 80, 85, 90, 100],
        )

    def _serving(self) -> None:
        """How the engine served: batches, downgrades, re-plans, the planner's corrections."""
        r = self.registry
        self.batch_size = Histogram(
            "dynaqa_batch_size", "Requests per micro-batch.", registry=r, buckets=[1, 2, 3, 4, 6, 8, 12, 16, 32]
        )
        self.downgraded = Counter(
            "dynaqa_load_downgrades_total",
            "Requests served a sub-network at least downgrade_f1 less accurate than an idle server would have chosen.",
            registry=r,
        )
        self.replans = Counter(
            "dynaqa_replans_total",
            "Requests whose sub-network was chosen again when they left the queue, by direction.",
            ["direction"],
            registry=r,
        )
        self.prediction_ratio = Gauge(
            "dynaqa_latency_prediction_ratio", "Observed over predicted model time (1 = calibrated).", registry=r
        )
        self.pace = Gauge(
            "dynaqa_service_pace",
            "Recent model time over its corrected prediction, at least 1: how much slower the core runs now.",
            registry=r,
        )
        self.plan_margin = Gauge(
            "dynaqa_plan_margin_seconds",
            "Time the planner keeps free in every budget: a high quantile of recent plan overruns.",
            registry=r,
        )

    def _replica(self) -> None:
        """The replica's state: queue, level, fleet, readiness, start-up."""
        r = self.registry
        self.queue_depth = Gauge("dynaqa_queue_depth", "Requests waiting for the model.", registry=r)
        self.inflight = Gauge("dynaqa_inflight_requests", "Requests admitted and not yet answered.", registry=r)
        self.level = Gauge("dynaqa_degradation_level", "Controller degradation level (0 = full quality).", registry=r)
        self.max_level = Gauge("dynaqa_degradation_level_max", "Highest degradation level.", registry=r)
        self.fleet_level = Gauge(
            "dynaqa_fleet_degradation_level", "Mean degradation level over live replicas.", registry=r
        )
        self.state_errors = Counter(
            "dynaqa_state_errors_total", "Failed fleet-state (Redis) operations.", ["operation"], registry=r
        )
        self.calibration_seconds = Gauge(
            "dynaqa_calibration_seconds", "Time the start-up calibration took.", registry=r
        )
        self.ready = Gauge("dynaqa_ready", "1 when the replica is ready to serve.", registry=r)
        self.unauthorized = Counter(
            "dynaqa_unauthorized_total", "Requests refused 401 by API-key auth, by reason.", ["reason"], registry=r
        )
        for reason in ("missing", "invalid"):
            self.unauthorized.labels(reason)
