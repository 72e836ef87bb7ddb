"""The running service: checkpoint, planner, batcher, controller, metrics and state, and the
request path that ties them together. Routes stay thin and call `Runtime.answer`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from models.data.squad import Answer, SquadExample, Windows
from models.errors import InvalidInput
from models.infer import checkpoint as ckpt
from models.infer.quantize import int8_kernel, int8_speedup
from models.infer.reader import Reader
from models.nn.cost import macs
from models.nn.subnet import SubnetConfig, grid
from service import calibration
from service.batcher import Batcher, BatchReport, WorkItem, batch_time_cap
from service.budget import Budget
from service.controller import Controller, LoadStats
from service.errors import BudgetBelowFloor, Draining, NotReady, Overloaded, PayloadTooLarge, ServiceError
from service.metrics import Metrics
from service.planner import Candidate, Choice, Infeasible, PlanMargin, Planner
from service.settings import Settings
from service.state import LocalState, RedisState, StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    answer: Answer
    candidate: Candidate
    budget: Budget
    fits: bool
    below_floor: bool  # nothing could meet this budget even on an idle server: not a load signal
    planned_s: float  # arrival to answer as planned: elapsed + predicted wait + predicted tail
    queue_s: float
    model_s: float
    latency_s: float  # arrival to answer computed
    arrival: float  # perf_counter seconds when the app first saw the request

    @property
    def budget_met(self) -> bool:
        return self.latency_s * 1000 <= self.budget.ms


@dataclass(frozen=True)
class Job:
    """What a queued request carries to the model thread and to its re-plan."""

    example: SquadExample
    windows: Windows
    cap: int  # the controller's level cap when it arrived
    idle: Candidate | None  # what an idle server would have chosen under that cap (downgrade count)


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


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.replica = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.ready = False
        self.draining = False
        self.level = 0.0  # the controller's, fractional (see `_cap`)
        self._dither = 0.0
        self.arrivals = 0
        self.recent_budgets: deque[float] = deque(maxlen=200)  # seconds, for the batch-time cap
        self.recent_sizes: deque[tuple[int, int]] = deque(maxlen=200)  # (tokens, windows), for level costs
        self.answered = 0
        self.misses = 0
        self.shed = 0
        self.admitted = 0  # let in by the gate, not yet queued: body being read, parsed, tokenised
        self.metrics: Metrics | None = None
        self.store: StateStore = LocalState()
        self.planner: Planner | None = None
        self.batcher: Batcher | None = None
        self.controller: Controller | None = None
        self.reader: Reader | None = None
        self.calibration_source = ""
        self.int8 = False  # whether INT8 weights were built (`load`): on, or `auto` where INT8 pays
        self.int8_source = ""  # where `auto`'s decision came from: state:KIND, disk or measured
        self.int8_probe: dict[str, Any] = {}  # that decision: int8, int8_speedup, kernel, hardware
        self.front = ""  # profile.json's key of the served front, "width x depth grid", or "pinned"
        self.failed: str | None = None  # why start-up failed, if it did
        self._tasks: list[asyncio.Task[None]] = []
        self._candidates: list[Candidate] = []
        self._by_subnet: dict[SubnetConfig, Candidate] = {}

    # --- start-up and shutdown -------------------------------------------------------------
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
        integer matmul the INT8 points would be calibrated at minutes each, then never chosen.
        INT8 on names the kernel, since the front searched on it is the one served."""
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
            checkpoint.model.compile_layers()
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
        served = self.planner.served
        self._by_subnet = {c.subnet: c for c in served}
        self.metrics.max_level.set(len(self.planner.candidates) - 1)
        self.controller = Controller(
            max_level=len(self.planner.candidates) - 1,
            target_busy=self.settings.target_busy,
            interval_s=self.settings.controller_interval_s,
        )
        log.info(
            json.dumps(
                {
                    "event": "loaded",
                    "checkpoint": str(checkpoint.path),
                    "candidates": [c.subnet.id for c in self.planner.candidates],
                    "reserves": [c.subnet.id for c in self.planner.reserves],
                    "calibration": source,
                    "calibration_seconds": round(seconds, 2),
                    "layer_step": "compiled" if checkpoint.model.compiled else "eager",
                    "state": self.store.kind,
                }
            )
        )

    def _warm(self) -> None:
        """Run every served sub-network through the real path, on the model thread, on a
        full-length input of two windows.

        The first forwards of a thread are slow (its allocator arena and the kernels' per-thread
        buffers are set up then), and so are the first at a large size: warmed on the start-up
        thread with a tiny input, the model thread's first real batches ran 2-3x their
        calibrated time (two full-model requests: 208 ms instead of ~110). Those overruns set the
        plan margin to 108 ms, and tight budgets got width 0.25 until they aged out.
        """
        assert self.reader is not None
        context = " ".join(["It was written by the author in 1990, long before the second edition."] * 40)
        for subnet in self._by_subnet:
            for _ in range(2):
                self.reader.answer("Who wrote it?", context, subnet)

    async def start(self) -> None:
        """Load now; calibrate in the background: the port opens (liveness), readiness waits.

        Every torch call of the process runs on the batcher's one model thread: loading,
        calibration, warm-up and serving. libgomp gives each thread that runs a parallel region a
        team of its own, and once its teams hold more threads than there are cores it stops
        spinning between regions and sleeps instead, whichever thread computes. Loaded and
        calibrated on a worker of the default executor, the INT8 sub-networks then served
        2.2-3.7x slower on the model thread than calibrated, the full model 1.2x
        (`python -m benchmarks.model_thread`), and the planner's corrections and pace pushed tight
        budgets to the fastest reserve. Loading and calibration run at the model thread's
        niceness (`model_nice`), as serving does.
        """
        batcher = Batcher(
            self._run_batch,
            self.settings.max_queue,
            self.settings.max_batch_windows,
            on_batch=self._on_batch,
            replan=self._replan if self.settings.replan else None,
            model_nice=self.settings.model_nice,
        )
        try:
            await batcher.on_model_thread(self.load)
        except BaseException:
            batcher.close()
            raise
        self._tasks.append(asyncio.get_running_loop().create_task(self._boot(batcher), name="dynaqa-boot"))

    async def _boot(self, batcher: Batcher) -> None:
        try:
            await batcher.on_model_thread(self.calibrate)
            await batcher.on_model_thread(self._warm)
        except BaseException as exc:  # cancelled by `stop` too: the model thread is released either way
            batcher.close()
            if not isinstance(exc, asyncio.CancelledError):
                self.failed = f"{type(exc).__name__}: {exc}"
                log.error(json.dumps({"event": "start-up failed", "error": self.failed}))
            raise
        assert self.metrics is not None
        # Everything loaded so far (torch, transformers, the model: ~240k objects) lives as long as
        # the process. A full collection walks all of it, 150 ms of stalled event loop; frozen,
        # the collector only walks what requests allocate.
        gc.collect()
        gc.freeze()
        self.batcher = batcher
        self.batcher.start()
        self._tasks.append(asyncio.get_running_loop().create_task(self._control_loop(), name="dynaqa-controller"))
        self.ready = True
        self.metrics.ready.set(0 if self.draining else 1)

    def begin_drain(self) -> None:
        """Readiness false, new requests refused (503); queued and running work carries on."""
        if not self.draining:
            self.draining = True
            if self.metrics:
                self.metrics.ready.set(0)
            log.info(json.dumps({"event": "draining", "queued": self.batcher.depth if self.batcher else 0}))

    async def stop(self) -> None:
        """Drain: refuse new work, let queued work finish (bounded), then stop the tasks."""
        self.begin_drain()
        deadline = time.perf_counter() + self.settings.drain_seconds
        while self.batcher and (self.batcher.depth or self.batcher.running) and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        left = (self.batcher.depth + self.batcher.running) if self.batcher else 0
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.batcher:
            await self.batcher.stop()
        log.info(json.dumps({"event": "drained", "answered": self.answered, "abandoned": left}))

    # --- the request path ------------------------------------------------------------------
    def admission_error(self, holding_place: bool = False) -> ServiceError | None:
        """The refusal a new request gets whatever it asks (None: admit it).

        Asked by the ASGI admission layer before the body is read, so shedding under overload
        costs the event loop microseconds. The queue's places count the requests the gate has
        let in but not yet queued (`admit`), so once admitted a request is never refused for a
        full queue after its body was parsed; `holding_place` skips that check for them. Draining
        and readiness are asked again on the request path: they can change while a body is read.
        """
        if self.draining:
            return Draining("the replica is draining", retry_after_s=1.0)
        if not self.ready or self.batcher is None:
            return NotReady("the replica is not ready yet", retry_after_s=2.0)
        if not holding_place and self.batcher.depth + self.admitted >= self.batcher.max_queue:
            return Overloaded("queue full", retry_after_s=max(0.1, self.batcher.queue_wait_s()))
        return None

    def admit(self) -> Callable[[], None]:
        """Reserve a queue place for a request the gate lets in; returns its idempotent release.

        The place is handed to the queue when the request is queued (`answer(on_queued=...)`) and
        given back by the gate when the request ends before that (bad input, a 4xx, a disconnect).
        """
        self.admitted += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.admitted -= 1

        return release

    async def answer(
        self,
        question: str,
        context: str,
        budget: Budget,
        arrival: float,
        on_queued: Callable[[], None] | None = None,
    ) -> Result:
        """Plan, queue and compute one request. `on_queued`: the gate's place release, when the
        caller was admitted through it (see `admit`)."""
        refusal = self.admission_error(holding_place=on_queued is not None)
        if refusal is not None:
            raise refusal
        if self.reader is None or self.planner is None or self.batcher is None:
            raise NotReady("the replica is not ready yet", retry_after_s=2.0)
        if len(context) > self.settings.max_context_chars:
            raise PayloadTooLarge(
                f"context has {len(context)} characters; the limit is {self.settings.max_context_chars}"
            )
        if len(question) > self.settings.max_question_chars:
            raise InvalidInput(
                f"question has {len(question)} characters; the limit is {self.settings.max_question_chars}"
            )
        self.arrivals += 1
        plan_s = self._plan_budget_s(budget)
        self.recent_budgets.append(plan_s)
        example = SquadExample("request", question, context)
        if len(context) > 4000:  # long contexts take milliseconds to tokenise: keep the loop free
            windows = await asyncio.to_thread(self.reader.windows, [example])
        else:
            windows = self.reader.windows([example])
        tokens, rows = max(windows.lengths()), len(windows)
        self.recent_sizes.append((tokens, rows))
        now = time.perf_counter()
        deadline = arrival + plan_s
        cap = self._cap()
        rank, queue_wait, decision = self._plan(plan_s, now - arrival, deadline, tokens, rows, cap)
        below_floor = False
        if isinstance(decision, Choice):
            candidate, fits = decision.candidate, True
        elif budget.strict and decision.reason == "floor":
            network_ms = self.settings.network_ms
            raise BudgetBelowFloor(
                f"budget {budget.ms:g} ms is below {decision.floor_s * 1000 + network_ms:.1f} ms: what the quickest "
                f"sub-network ({decision.fastest.subnet.id}) needs for this input ({tokens} tokens, {rows} "
                f"window(s)) on an idle server, {decision.floor_s * 1000:.1f} ms, plus {network_ms:g} ms for the "
                "network (DYNAQA_NETWORK_MS)"
            )
        elif budget.strict:
            raise Overloaded(
                f"budget {budget.ms:g} ms cannot be met under the current load",
                retry_after_s=self.batcher.queue_wait_s(),
            )
        else:
            candidate, fits, below_floor = decision.fastest, False, decision.reason == "floor"
        grace = 0.0 if budget.strict else self.settings.lenient_grace_ms / 1000
        # Queued work counts at its tail, not its mean: a newcomer's predicted wait then holds
        # unless the work ahead of it runs past its own tail (the plan margin covers the rest).
        predicted = decision.predicted_s if isinstance(decision, Choice) else decision.floor_s
        idle = self.planner.choose(plan_s, now - arrival, 0.0, tokens, rows, cap)
        job = Job(example, windows, cap, idle.candidate if isinstance(idle, Choice) else None)
        item = WorkItem(rank, 0, deadline, candidate.subnet, rows, tokens, deadline + grace, predicted, job)
        assert self.metrics is not None
        self.metrics.inflight.inc()
        try:
            answer, model_s = await self.batcher.submit(item, on_queued)
        finally:
            self.metrics.inflight.dec()
        done = time.perf_counter()
        planned = now - arrival + queue_wait + predicted
        if self.settings.replan:  # the plan that ran is the one made when it left the queue
            planned = item.started_at - arrival + item.predicted_s
        if item.subnet != candidate.subnet:
            candidate, fits, below_floor = self._by_subnet[item.subnet], True, False
        if job.idle is not None and self.planner.accuracy_lost(job.idle, candidate) >= self.settings.downgrade_f1:
            self.metrics.downgraded.inc()
        return Result(
            answer,
            candidate,
            budget,
            fits,
            below_floor,
            planned,
            item.started_at - arrival,
            model_s,
            done - arrival,
            arrival,
        )

    def settle(self, result: Result, sent_at: float) -> None:
        """The response's last byte was handed to the transport at `sent_at`: feed the plan margin.

        The caller's clock runs until then, not until the model is done: building, validating
        and writing the response took 1-2 ms more, which no plan counted, and answers planned
        to end just inside their budget arrived just outside it (2x load test). Measured here,
        that time is part of every plan's error, and the margin keeps it free.
        A lenient request answered late anyway was never planned to fit and is not sampled.
        """
        if result.fits and self.planner is not None:
            actual_s = sent_at - result.arrival
            self.planner.observe_plan(result.planned_s, actual_s, self._plan_budget_s(result.budget), sent_at)

    def _plan_budget_s(self, budget: Budget) -> float:
        """What the caller's budget leaves this process: less the network's allowance."""
        return (budget.ms - self.settings.network_ms) / 1000

    def _cap(self) -> int:
        """This request's level cap: a fractional level k - p gives the share p of requests the
        cap k - 1 and the rest k, spread evenly (error diffusion, no randomness to test around)."""
        k = math.ceil(self.level)
        self._dither += k - self.level
        if self._dither >= 1.0:
            self._dither -= 1.0
            return k - 1
        return k

    def _plan(
        self, budget_s: float, elapsed_s: float, deadline: float, tokens: int, rows: int, cap: int
    ) -> tuple[float, float, Choice | Infeasible]:
        """Where the request queues (its rank), the wait predicted there, and the planner's decision
        under level cap `cap`.

        By deadline (EDF) the request overtakes every queued item due later, and may compute only
        as long as none of them becomes late. The planner chose each of those the most accurate
        sub-network that fit, so under load they sit close to their deadlines and leave a
        newcomer only the fastest one (2x load test: tight requests with 3 ms of queue ran at
        F1 35). Queued behind all of them instead, it waits longer but overtakes nothing: when
        that buys a more accurate sub-network within its own budget, it goes to the back.
        """
        assert self.planner is not None and self.batcher is not None
        wait = self.batcher.queue_wait_s(deadline)
        decision = self.planner.choose(budget_s, elapsed_s, wait, tokens, rows, cap, self.batcher.slack_s(deadline))
        last = self.batcher.last_rank()
        if last <= deadline or not isinstance(decision, Choice):
            return deadline, wait, decision
        wait_all = self.batcher.queue_wait_s()
        behind = self.planner.choose(budget_s, elapsed_s, wait_all, tokens, rows, cap)
        if isinstance(behind, Choice) and self.planner.rank(behind.candidate) < self.planner.rank(decision.candidate):
            return math.nextafter(last, math.inf), wait_all, behind
        return deadline, wait, decision

    def _replan(self, item: WorkItem, now: float, extra_s: float) -> tuple[SubnetConfig, float] | None:
        """The sub-network of the request about to run, chosen again now that its wait is over.

        At arrival the request counted the work queued ahead of it at its tails (mean + 3 sigma,
        times the safety factor and the pace), so it usually starts with more of its budget left
        than planned; under load that gap is what separates width 0.25 from width 0.5 for the
        tight budgets. It now takes the most accurate candidate under its arrival's level cap
        that ends by its deadline (less the plan margin) and runs at most `extra_s` longer than
        planned, so no waiting request becomes late. A request whose plan would now end past
        its deadline takes the most accurate candidate that still ends in time; otherwise a
        plan is never made less accurate.
        """
        assert self.planner is not None and self.metrics is not None
        job: Job = item.payload
        planned = self._by_subnet[item.subnet]
        left = item.deadline - now
        choice = self.planner.choose(left, 0.0, 0.0, item.tokens, item.windows, job.cap, item.predicted_s + extra_s)
        if not isinstance(choice, Choice) or choice.candidate == planned:
            return None
        if self.planner.rank(choice.candidate) < self.planner.rank(planned):
            self.metrics.replans.labels("up").inc()
        elif item.predicted_s > left:
            self.metrics.replans.labels("down").inc()
        else:
            return None
        return choice.candidate.subnet, choice.predicted_s

    def _run_batch(self, subnet, items: list[WorkItem]) -> list[tuple[Answer, float]]:  # type: ignore[no-untyped-def]
        """Runs on the model thread: one forward for every window of every item."""
        assert self.reader is not None
        began = time.perf_counter()
        answers = self.reader.answer_batch([(item.payload.example, item.payload.windows) for item in items], subnet)
        seconds = time.perf_counter() - began
        return [(a, seconds) for a in answers]

    def _on_batch(self, report: BatchReport) -> None:
        assert self.metrics is not None and self.planner is not None
        self.metrics.model_seconds.observe(report.seconds)
        self.metrics.batch_size.observe(report.items)
        self.planner.observe(report.subnet.id, report.tokens, report.windows, report.seconds)
        self.metrics.prediction_ratio.set(self.planner.drift())
        self.metrics.pace.set(self.planner.pace.factor)

    # --- the control loop ------------------------------------------------------------------
    async def _control_loop(self) -> None:
        """Tick the controller about once a second; a failing tick is logged, never fatal."""
        assert self.batcher is not None and self.controller is not None and self.metrics is not None
        assert self.planner is not None
        interval = self.settings.controller_interval_s
        last_time, last_busy = time.perf_counter(), self.batcher.busy_seconds
        last = (self.arrivals, self.answered, self.misses, self.shed)
        while True:
            await asyncio.sleep(interval)
            try:
                now, busy = time.perf_counter(), self.batcher.busy_seconds
                elapsed = max(1e-3, now - last_time)  # the real tick length, Redis time included
                arrivals, answered, misses, shed = self.arrivals, self.answered, self.misses, self.shed
                stats = LoadStats(
                    arrivals_per_s=(arrivals - last[0]) / elapsed,
                    busy_fraction=min(1.0, (busy - last_busy) / elapsed),
                    queue_depth=self.batcher.depth,
                    max_queue=self.batcher.max_queue,
                    requests=(answered - last[1]) + (shed - last[3]),
                    budget_misses=misses - last[2],
                    shed=shed - last[3],
                    level_costs=self._level_costs(),
                )
                last_time, last_busy, last = now, busy, (arrivals, answered, misses, shed)
                level = self.controller.tick(stats)
                if math.ceil(level) != math.ceil(self.level):  # the why of every change of cap, for operators
                    log.info(
                        json.dumps(
                            {"event": "level", "from": self.level, "to": level, "floor": self.controller.floor}
                            | asdict(stats)
                        )
                    )
                self.level = level
                self.metrics.level.set(self.level)
                self.batcher.max_batch_s = batch_time_cap(self.recent_budgets)
                self.planner.margin.expire(now)  # a quiet server forgets old overruns too
                self.metrics.plan_margin.set(self.planner.margin.margin_s)
                self.metrics.queue_depth.set(self.batcher.depth)
                info = {"level": self.level, "busy": stats.busy_fraction, "queue": stats.queue_depth, "ts": time.time()}
                fleet = await asyncio.to_thread(self._sync_fleet, info, interval)
                levels = [float(r.get("level", 0)) for r in fleet.values()] or [float(self.level)]
                self.metrics.fleet_level.set(sum(levels) / len(levels))
            except Exception:
                log.exception(json.dumps({"event": "controller tick failed"}))

    def _level_costs(self) -> tuple[float, ...]:
        """Predicted model seconds per request at each level (its most accurate candidate), for
        a request of the recent requests' mean size; empty before any request."""
        assert self.planner is not None
        if not self.recent_sizes:
            return ()
        tokens = round(sum(t for t, _ in self.recent_sizes) / len(self.recent_sizes))
        windows = sum(w for _, w in self.recent_sizes) / len(self.recent_sizes)
        return tuple(self.planner.mean_s(c, tokens) * windows for c in self.planner.candidates)

    def _sync_fleet(self, info: dict[str, float], interval: float) -> dict[str, dict[str, float]]:
        self.store.publish(self.replica, info, ttl_s=max(3.0, 3 * interval))
        return self.store.fleet()  # type: ignore[return-value]

    def record(self, outcome: str, latency_s: float, result: Result | None = None) -> None:
        """Count one finished request in the metrics."""
        assert self.metrics is not None
        self.metrics.requests.labels(outcome).inc()
        self.metrics.request_seconds.labels(outcome).observe(latency_s)
        if outcome in ("shed",):
            self.shed += 1
        if result is not None:
            self.answered += 1
            self.metrics.budget.labels("met" if result.budget_met else "missed").inc()
            if not result.budget_met and not result.below_floor:  # the controller's load signal
                self.misses += 1
            self.metrics.budget_seconds.observe(result.budget.ms / 1000)
            self.metrics.subnet.labels(result.candidate.subnet.id).inc()
            self.metrics.queue_seconds.observe(max(0.0, result.queue_s))
            if result.candidate.expected_f1 is not None:
                self.metrics.expected_f1.observe(result.candidate.expected_f1)
