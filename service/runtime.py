"""The replica's lifecycle: load, calibrate, warm up, serve, drain. It decides nothing per
request (the scheduler does) and computes nothing itself (the executor's thread does).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import time
from typing import Any

import torch

from models.infer import checkpoint as ckpt
from models.infer.compile import compile_layers
from models.infer.quantize import int8_kernel, int8_speedup
from models.infer.reader import Reader
from models.nn.cost import macs
from models.nn.subnet import grid
from service import calibration
from service.control import ControlLoop
from service.controller import Controller
from service.engine.engine import Engine, Limits
from service.engine.executor import Executor
from service.engine.scheduler import Place, Scheduler
from service.errors import Draining, NotReady, ServiceError
from service.metrics import Metrics
from service.outcomes import Outcomes
from service.planner import Candidate, PlanMargin, Planner
from service.settings import Settings
from service.state import LocalState, RedisState, StateStore

log = logging.getLogger(__name__)


def candidates_of(checkpoint: ckpt.Checkpoint, int8: bool = True) -> list[Candidate]:
    """The shipped Pareto set of this CPU's INT8 kernel (`Checkpoint.front`), or without INT8 the
    float-only one (`pareto_float`); the width x depth grid (float, with training.json's scores)
    where the needed front was never searched. Not the INT8 front's float points: on an INT8
    front they can be the full model alone."""
    profile = checkpoint.front(int8)
    if profile:
        return [Candidate(e.subnet, e.f1, e.macs) for e in profile]
    scores = checkpoint.training.get("grid_scores", {})
    space = [s for s in grid() if s.width in checkpoint.widths and s.depth in checkpoint.depths]
    return [Candidate(s, scores.get(s.id), macs(checkpoint.config, s, 384)) for s in space]


def _draining() -> Draining:
    return Draining("the replica is draining", retry_after_s=1.0)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.replica = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.ready = False
        self.draining = False
        self.leaving = False  # a stop signal came: not ready, still serving until the drain
        self.failed: str | None = None  # why start-up failed, if it did
        self.store: StateStore = LocalState()
        self.metrics: Metrics | None = None
        self.outcomes: Outcomes | None = None
        self.reader: Reader | None = None
        self.planner: Planner | None = None
        self.executor: Executor | None = None
        self.engine: Engine | None = None
        self.calibration_source = ""
        self.int8 = False  # whether INT8 weights were built (`load`): on, or `auto` where INT8 pays
        self.int8_source = ""  # where `auto`'s decision came from: state:KIND, disk or measured
        self.int8_probe: dict[str, Any] = {}  # that decision: int8, int8_speedup, kernel, hardware
        self.front = ""  # profile.json's key of the served front, "width x depth grid", or "pinned"
        self._tasks: list[asyncio.Task[None]] = []
        self._candidates: list[Candidate] = []

    @property
    def level(self) -> float:
        """The controller's degradation level now (0 before serving)."""
        return self.engine.scheduler.level if self.engine else 0.0

    # --- start-up ----------------------------------------------------------------------------
    def load(self) -> None:
        """Blocking, fast part of start-up: load and validate the checkpoint, pick candidates.

        Runs before the port opens, so a missing or corrupt checkpoint stops the process with a
        clear error and a non-zero exit instead of a replica that is never ready."""
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        if self.settings.redis_url:
            self.store = RedisState(self.settings.redis_url, self._count_state_error)
        int8 = bool(self.settings.pin_subnet) or self._int8()
        checkpoint = ckpt.load(self.settings.checkpoint, int8=int8)
        self.reader = Reader(checkpoint, max_length=self.settings.max_length, stride=self.settings.stride)
        candidates = candidates_of(checkpoint, int8)
        self.int8 = int8
        self.front = "pinned" if self.settings.pin_subnet else checkpoint.front_key(int8) or "width x depth grid"
        self._log_int8(checkpoint)
        if self.settings.pin_subnet:
            pinned = checkpoint.resolve(self.settings.pin_subnet)
            known = {c.subnet: c for c in candidates}
            candidates = [known.get(pinned) or Candidate(pinned, None, macs(checkpoint.config, pinned, 384))]
        self.metrics = Metrics(self.settings.slo_thresholds_ms, [c.subnet.id for c in candidates])
        self.outcomes = Outcomes(self.metrics)
        self._candidates = candidates

    def _int8(self) -> bool:
        """`on` and `off` decide; `auto` takes this hardware's recorded decision, else probes
        (`calibration.int8_decision`)."""
        if self.settings.int8 != "auto":
            return self.settings.int8 == "on"
        decision, self.int8_source = calibration.int8_decision(self.store, self.settings.cache_dir)
        self.int8_probe = decision
        if decision["int8"] and decision.get("kernel") != int8_kernel():
            log.warning(json.dumps({"event": "int8 kernel differs from the recorded decision's", **decision}))
        return bool(decision["int8"])

    def _log_int8(self, checkpoint: ckpt.Checkpoint) -> None:
        """Say which front is served and why. INT8 off is a warning: on a CPU without a fast
        integer matmul the INT8 points would be calibrated at minutes each, then never chosen."""
        event: dict[str, object] = {
            "event": f"int8 {'on' if self.int8 else 'off'}",
            "mode": self.settings.int8,
            "front": self.front,
        }
        if self.int8_source:  # `auto`'s recorded decision, maybe another replica's
            event |= {"int8_speedup": self.int8_probe.get("int8_speedup"), "decided": self.int8_source}
        elif self.int8:
            event["int8_speedup"] = round(int8_speedup(), 3)
        if self.int8:
            log.info(json.dumps({**event, "kernel": int8_kernel()}))
        else:
            event["dropped"] = sorted({e.subnet.id for e in checkpoint.entries() if e.subnet.quantized})
            log.warning(json.dumps(event))

    def _count_state_error(self, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.state_errors.labels(operation).inc()

    def calibrate(self) -> None:
        """Blocking, slow part of start-up (background): latency profile and planner."""
        assert self.reader is not None and self.metrics is not None
        checkpoint, candidates = self.reader.checkpoint, self._candidates
        if self.settings.compile:
            compile_layers(checkpoint.model)
        latency, source, seconds = calibration.load_or_measure(
            checkpoint.model,
            candidates,
            checkpoint.fingerprint(),
            self.store,
            self.settings.cache_dir,
            self.settings.max_length,
            self.settings.calibration_repeats,
        )
        self.calibration_source = source
        self.metrics.calibration_seconds.set(seconds)
        self.planner = Planner(
            candidates,
            latency,
            self.settings.safety_factor,
            self.settings.tail_sigmas,
            margin=PlanMargin(tight_share=0.0 if self.settings.replan else 0.5),
            min_f1_share=self.settings.min_f1_share,
        )
        self.metrics.max_level.set(len(self.planner.candidates) - 1)
        event = {
            "event": "loaded",
            "checkpoint": str(checkpoint.path),
            "candidates": [c.subnet.id for c in self.planner.candidates],
            "reserves": [c.subnet.id for c in self.planner.reserves],
            "calibration": source,
            "calibration_seconds": round(seconds, 2),
            "layer_step": "compiled" if checkpoint.model.compiled else "eager",
            "state": self.store.kind,
        }
        log.info(json.dumps(event))

    def _warm(self) -> None:
        """Run every served sub-network through the real path, on the model thread, on a
        full-length input of two windows: a thread's first forwards, and the first at a large
        size, run 2-3x their calibrated time, and planned against they would set the plan margin."""
        assert self.reader is not None and self.planner is not None
        context = " ".join(["It was written by the author in 1990, long before the second edition."] * 40)
        for candidate in self.planner.served:
            for _ in range(2):
                self.reader.answer("Who wrote it?", context, candidate.subnet)

    def _serve(self) -> tuple[Engine, ControlLoop]:
        """The engine and control loop over the calibrated planner."""
        assert self.planner is not None and self.metrics is not None and self.outcomes is not None
        assert self.executor is not None
        s = self.settings
        scheduler = Scheduler(
            self.planner,
            max_queue=s.max_queue,
            max_batch_windows=s.max_batch_windows,
            network_ms=s.network_ms,
            lenient_grace_ms=s.lenient_grace_ms,
            replan=s.replan,
            downgrade_f1=s.downgrade_f1,
        )
        if self.draining:
            scheduler.close(_draining())
        self.executor.reader = self.reader
        engine = Engine(scheduler, self.executor, self.metrics, Limits(s.max_context_chars, s.max_question_chars))
        controller = Controller(
            max_level=len(self.planner.candidates) - 1, target_busy=s.target_busy, interval_s=s.controller_interval_s
        )
        control = ControlLoop(controller, scheduler, self.outcomes, self.store, self.replica, s.controller_interval_s)
        return engine, control

    async def start(self) -> None:
        """Load now; calibrate in the background: the port opens (liveness), readiness waits.
        Loading and calibration run on the executor's model thread, as serving does."""
        self.executor = Executor(self.settings.model_nice)
        try:
            await self.executor.call(self.load)
        except BaseException:
            self.executor.close()
            raise
        self._tasks.append(asyncio.get_running_loop().create_task(self._boot(), name="dynaqa-boot"))

    async def _boot(self) -> None:
        assert self.executor is not None
        try:
            await self.executor.call(self.calibrate)
            await self.executor.call(self._warm)
        except BaseException as exc:  # cancelled by `stop` too: the model thread is released either way
            self.executor.close()
            if not isinstance(exc, asyncio.CancelledError):
                self.failed = f"{type(exc).__name__}: {exc}"
                log.error(json.dumps({"event": "start-up failed", "error": self.failed}))
            raise
        assert self.metrics is not None
        # What start-up loaded (torch, transformers, the model: ~240k objects) lives as long as the
        # process: frozen, a full collection walks only what requests allocate (not 150 ms of it).
        gc.collect()
        gc.freeze()
        self.engine, control = self._serve()
        self.engine.start()
        self._tasks.append(asyncio.get_running_loop().create_task(control.run(), name="dynaqa-controller"))
        self.ready = True
        self.metrics.ready.set(1 if self.accepting else 0)

    # --- admission and shutdown ----------------------------------------------------------------
    def reserve(self) -> Place | ServiceError:
        """The gate's question, asked before a body is read: a queue place, or the refusal
        (draining, not ready, queue full) that costs the event loop microseconds under overload."""
        if self.draining:
            return _draining()
        if not self.ready or self.engine is None:
            return NotReady("the replica is not ready yet", retry_after_s=2.0)
        return self.engine.scheduler.reserve()

    @property
    def accepting(self) -> bool:
        """What readiness reports: serving, and no stop signal or drain under way."""
        return self.ready and not (self.leaving or self.draining)

    def leave(self) -> None:
        """Readiness false at a stop signal; requests are still answered until `begin_drain`."""
        self.leaving = True
        if self.metrics:
            self.metrics.ready.set(0)
        log.info(json.dumps({"event": "leaving", "linger_s": self.settings.drain_linger_s}))

    def begin_drain(self) -> None:
        """Readiness false, new requests refused (503); queued and running work carries on."""
        if self.draining:
            return
        self.draining = True
        if self.metrics:
            self.metrics.ready.set(0)
        if self.engine:
            self.engine.scheduler.close(_draining())
        log.info(json.dumps({"event": "draining", "queued": self.engine.scheduler.depth if self.engine else 0}))

    async def stop(self) -> None:
        """Drain: refuse new work, let queued work finish (bounded), then stop the tasks."""
        self.begin_drain()
        deadline = time.perf_counter() + self.settings.drain_seconds
        scheduler = self.engine.scheduler if self.engine else None
        while scheduler and (scheduler.depth or scheduler.running) and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        left = (scheduler.depth + scheduler.running) if scheduler else 0
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.engine and self.executor:
            await self.engine.stop()
            self.executor.shutdown()
        answered = self.outcomes.answered if self.outcomes else 0
        log.info(json.dumps({"event": "drained", "answered": answered, "abandoned": left}))
