"""The executor: the one model thread, and running batch plans on it. It decides nothing.

Every torch call of the process runs on this thread (loading, calibration, warm-up, serving):
libgomp gives each computing thread its own team, and with more teams than cores they sleep
between regions (`python -m benchmarks.model_thread` measures what another thread costs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from models.data.squad import Answer
from models.infer.reader import Reader
from service.engine.scheduler import BatchPlan, BatchReport

log = logging.getLogger(__name__)
T = TypeVar("T")


def lower_priority(nice: int) -> None:
    """Add `nice` to the calling thread's niceness (Linux: a thread is a task with its own).

    Run as the model thread's initializer: the event loop then wins the CPU whenever it has work,
    so admission and refusals stay fast while a forward pass runs on the same core. Raising
    niceness needs no privilege.
    """
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        log.warning(json.dumps({"event": "model thread priority unchanged", "error": str(exc)}))


class Executor:
    """Owns the model thread. `call` runs start-up work there; `run` computes a plan with `reader`."""

    def __init__(self, model_nice: int = 0, clock: Callable[[], float] = time.perf_counter) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dynaqa-model", initializer=lower_priority, initargs=(model_nice,)
        )
        self._clock = clock
        self.reader: Reader | None = None  # set once the checkpoint is loaded

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the model thread and wait for it."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def run(self, plan: BatchPlan) -> tuple[list[tuple[list[Answer], float]], BatchReport]:
        """One forward over every window of every ticket of `plan`: each answer with the model
        seconds it took, and the report the scheduler learns from (timed around the thread hop, as a
        request waits for it). A model error comes back as `BatchFailed`, carrying the failed report,
        with the model's exception as its cause."""
        assert plan.subnet is not None and plan.tickets
        started = self._clock()
        report = BatchReport(
            plan.subnet,
            len(plan.tickets),
            sum(t.windows for t in plan.tickets),
            max(t.tokens for t in plan.tickets),
            0.0,
        )
        try:
            answers = await self.call(lambda: self._forward(plan))
        except Exception as exc:
            raise BatchFailed(replace(report, seconds=self._clock() - started, failed=True)) from exc
        return answers, replace(report, seconds=self._clock() - started)

    def _forward(self, plan: BatchPlan) -> list[tuple[list[Answer], float]]:
        """Runs on the model thread."""
        assert self.reader is not None and plan.subnet is not None
        began = time.perf_counter()
        answers = self.reader.answer_batch([t.payload for t in plan.tickets], plan.subnet)
        seconds = time.perf_counter() - began
        return [(a, seconds) for a in answers]

    def close(self) -> None:
        """Release the thread of an executor whose start-up failed or was cut short."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """Wait for the running work, then release the thread."""
        self._pool.shutdown(wait=True)


class BatchFailed(Exception):
    """The model raised on a batch: `report` (failed) frees the scheduler; `__cause__` says why."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__(f"batch of {report.items} on {report.subnet.id} failed")
        self.report = report
