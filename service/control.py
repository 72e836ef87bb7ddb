"""The control loop: about once a second, what the last second saw goes to the controller, its
level to the scheduler, and this replica's load to fleet state. A failing tick is logged, never fatal."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import asdict

from service.controller import Controller, LoadStats
from service.engine.scheduler import Scheduler
from service.metrics import Metrics
from service.outcomes import Outcomes
from service.state import StateStore

log = logging.getLogger(__name__)


class ControlLoop:
    def __init__(
        self,
        controller: Controller,
        scheduler: Scheduler,
        outcomes: Outcomes,
        store: StateStore,
        replica: str,
        interval_s: float,
    ) -> None:
        self.controller = controller
        self.scheduler = scheduler
        self.outcomes = outcomes
        self.metrics: Metrics = outcomes.metrics
        self.store = store
        self.replica = replica
        self.interval_s = interval_s
        self._last_time = time.perf_counter()
        self._last_busy = scheduler.busy_seconds
        self._last = self._totals()

    def _totals(self) -> tuple[int, int, int, int]:
        o = self.outcomes
        return self.scheduler.arrivals, o.answered, o.misses, o.shed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:
                log.exception(json.dumps({"event": "controller tick failed"}))

    def stats(self, now: float) -> LoadStats:
        """What happened since the last call (the real tick length, Redis time included)."""
        scheduler = self.scheduler
        elapsed = max(1e-3, now - self._last_time)
        busy, totals = scheduler.busy_seconds, self._totals()
        (arrivals, answered, misses, shed), last = totals, self._last
        stats = LoadStats(
            arrivals_per_s=(arrivals - last[0]) / elapsed,
            busy_fraction=min(1.0, (busy - self._last_busy) / elapsed),
            queue_depth=scheduler.depth,
            max_queue=scheduler.max_queue,
            requests=(answered - last[1]) + (shed - last[3]),
            budget_misses=misses - last[2],
            shed=shed - last[3],
            level_costs=scheduler.level_costs(),
        )
        self._last_time, self._last_busy, self._last = now, busy, totals
        return stats

    async def tick(self) -> None:
        now = time.perf_counter()
        stats = self.stats(now)
        scheduler = self.scheduler
        level = self.controller.tick(stats)
        if math.ceil(level) != math.ceil(scheduler.level):  # the why of every change of cap, for operators
            event = {"event": "level", "from": scheduler.level, "to": level, "floor": self.controller.floor}
            log.info(json.dumps(event | asdict(stats)))
        scheduler.level = level
        scheduler.refresh(now)
        self.metrics.level.set(level)
        self.metrics.plan_margin.set(scheduler.planner.margin.margin_s)
        self.metrics.queue_depth.set(scheduler.depth)
        info = {"level": level, "busy": stats.busy_fraction, "queue": stats.queue_depth, "ts": time.time()}
        fleet = await asyncio.to_thread(self._sync_fleet, info)
        levels = [float(r.get("level", 0)) for r in fleet.values()] or [float(level)]
        self.metrics.fleet_level.set(sum(levels) / len(levels))

    def _sync_fleet(self, info: dict[str, float]) -> dict[str, dict[str, float]]:
        self.store.publish(self.replica, info, ttl_s=max(3.0, 3 * self.interval_s))
        return self.store.fleet()  # type: ignore[return-value]
