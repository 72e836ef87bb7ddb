"""Earliest-deadline-first queue with micro-batching; the only owner of the model.

`await batcher.submit(item)` returns the item's result. Items are served in `rank` order: the
deadline (EDF), or the end of the queue for an item that chose to wait behind the queued work
instead of overtaking it (see `Runtime._plan`). One task takes the entry of lowest rank, lets the
owner re-plan its sub-network now that its wait is over (`replan`; see `Runtime._replan`), adds
queued entries that chose the same sub-network (in rank order, up to the window cap and the
batch-time cap, and only while that makes no item it overtakes late), skips entries that were
cancelled or whose drop time has passed (they get `Expired`, before any compute), and runs the
batch on a single worker thread so the event loop never computes. It never waits for more work
to arrive: whatever is queued when the model is free goes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from models.nn.subnet import SubnetConfig
from service.errors import Expired, Overloaded

log = logging.getLogger(__name__)


def lower_priority(nice: int) -> None:
    """Add `nice` to the calling thread's niceness (Linux: a thread is a task with its own).

    Run as the model thread's initializer: the event loop then wins the CPU whenever it has work,
    so admission and refusals stay fast while a forward pass is running on the same core, and
    the model takes every cycle the loop leaves. Raising niceness needs no privilege.
    """
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        log.warning(json.dumps({"event": "model thread priority unchanged", "error": str(exc)}))


def batch_time_cap(budgets: Sequence[float], share: float = 0.5, quantile: float = 0.05) -> float:
    """Longest predicted batch worth starting: `share` of a low quantile of recent budgets.

    A running batch cannot be preempted, so a tight request arriving just as it starts waits all
    of it before its own forward. Batching buys no throughput on this CPU (per-item time is flat
    from batch 1 to 8), so a batch is cut where it would eat more than half of the tight budgets
    the service sees. Infinite until any budget has been seen.
    """
    if not budgets:
        return math.inf
    ordered = sorted(budgets)
    return share * ordered[max(1, math.ceil(quantile * len(ordered))) - 1]  # nearest rank


def slack_after(finish: float, waiting: Iterable[WorkItem]) -> float:
    """How much later than `finish` the `waiting` items (in the order they will run) may all start
    without one of them becoming late; infinite when none would be on time anyway.

    Only an item on time by predicted tails counts: one that is late already constrains nothing.
    """
    slack = math.inf
    for item in waiting:
        finish += item.predicted_s
        if item.deadline >= finish:
            slack = min(slack, item.deadline - finish)
    return slack


@dataclass(order=True)
class WorkItem:
    rank: float  # the queue's order: the deadline, or later for an item queued behind (see module doc)
    seq: int
    deadline: float = field(compare=False)  # perf_counter seconds at which the budget ends
    subnet: SubnetConfig = field(compare=False)
    windows: int = field(compare=False)  # model rows this item needs
    tokens: int = field(compare=False)  # longest window, for the latency model
    drop_after: float = field(compare=False)  # past this, drop instead of computing
    predicted_s: float = field(compare=False)  # predicted (tail) service time, for queue-wait estimates
    payload: Any = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False, repr=False, default=None)  # type: ignore[assignment]
    started_at: float = field(compare=False, default=0.0)


@dataclass(frozen=True)
class BatchReport:
    subnet: SubnetConfig
    items: int
    windows: int
    tokens: int
    seconds: float


RunBatch = Callable[[SubnetConfig, list[WorkItem]], list[Any]]
# (head, now, extra_s) -> a new (subnet, predicted_s) for the head, or None to keep its plan;
# extra_s: how much longer than planned it may run without making a waiting item late.
Replan = Callable[[WorkItem, float, float], tuple[SubnetConfig, float] | None]


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        max_queue: int,
        max_batch_windows: int,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_expired: Callable[[WorkItem], None] | None = None,
        replan: Replan | None = None,
        clock: Callable[[], float] = time.perf_counter,
        model_nice: int = 0,
    ) -> None:
        self._run_batch = run_batch
        self.max_queue = max_queue
        self.max_batch_windows = max_batch_windows
        self._on_batch = on_batch
        self._on_expired = on_expired
        self._replan = replan
        self._clock = clock
        self._heap: list[WorkItem] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dynaqa-model", initializer=lower_priority, initargs=(model_nice,)
        )
        self._task: asyncio.Task[None] | None = None
        self._inflight_until = 0.0  # predicted end of the running batch
        self.busy_seconds = 0.0  # cumulative compute time, for the controller
        self.running = 0  # items in the batch being computed
        self.max_batch_s = math.inf  # companions stop joining past this predicted batch time

    @property
    def depth(self) -> int:
        return len(self._heap)

    def queue_wait_s(self, rank: float | None = None) -> float:
        """Predicted wait before a new item of `rank` starts: the running batch's rest plus the
        queued work served before it (all of it when `rank` is None)."""
        rest = max(0.0, self._inflight_until - self._clock())
        ahead = (i.predicted_s for i in self._heap if not i.future.done() and (rank is None or i.rank <= rank))
        return rest + sum(ahead)

    def last_rank(self) -> float:
        """The rank of the last item queued (-inf when none): a new item ranked after it overtakes nothing."""
        return max((i.rank for i in self._heap if not i.future.done()), default=-math.inf)

    def slack_s(self, rank: float) -> float:
        """How long a new item of `rank` may compute without making a queued item late.

        The new item runs before every queued item ranked after it, so its service time delays
        all of them. Without this bound, a later arrival with a tighter budget could take the full
        model and push work that was planned to fit past its deadline. Infinite when none wait.
        """
        queued = sorted(i for i in self._heap if not i.future.done())
        ahead = sum(i.predicted_s for i in queued if i.rank <= rank)
        start = max(self._clock(), self._inflight_until) + ahead  # when the running batch and those ahead end
        return slack_after(start, (i for i in queued if i.rank > rank))

    async def on_model_thread(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the model thread: before `start`, the owner's loading, calibration and
        warm-up, so that every torch call of the process shares one thread (see `Runtime.start`)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        """Release the model thread of a batcher that never started (start-up failed or was cut short)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynaqa-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in self._heap:
            if not item.future.done():
                item.future.set_exception(Overloaded("the server is shutting down", retry_after_s=1.0))
        self._heap.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, item: WorkItem, on_queued: Callable[[], None] | None = None) -> Any:
        """Queue `item` and wait for its result; Overloaded at once if the queue is full.

        `on_queued` runs once the item is in the queue (before its result is awaited): the
        service's admission gate hands its reserved place over to the queue there."""
        if len(self._heap) >= self.max_queue:
            raise Overloaded("queue full", retry_after_s=max(0.1, self.queue_wait_s()))
        item.seq = next(self._seq)
        item.future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, item)
        if on_queued is not None:
            on_queued()
        self._wake.set()
        return await item.future  # a cancelled await cancels the future: the loop skips it

    def _next_batch(self) -> list[WorkItem]:
        """Pop the head and same-subnet companions; expire what can no longer be served.

        The head is the lowest rank still reachable; lenient items already past their
        deadline (kept until their grace runs out) go only when nothing on time is waiting, so a
        backlog of late work cannot make every request late.
        """
        now = self._clock()
        live: list[WorkItem] = []
        while self._heap:
            item = heapq.heappop(self._heap)  # in rank order
            if item.future.done():
                continue
            if item.drop_after < now:
                item.future.set_exception(Expired("deadline passed while queued; dropped before compute"))
                if self._on_expired:
                    self._on_expired(item)
                continue
            live.append(item)
        if not live:
            return []
        on_time = [i for i in live if i.deadline >= now]
        ordered = on_time + [i for i in live if i.deadline < now]
        head = ordered[0]
        if self._replan is not None:
            new = self._replan(head, now, slack_after(now + head.predicted_s, ordered[1:]))
            if new is not None:
                head.subnet, head.predicted_s = new
        batch, windows, finish = [head], head.windows, now + head.predicted_s
        passed: list[WorkItem] = []  # items this batch goes ahead of, in the order they will run
        for item in ordered[1:]:
            if (
                item.subnet == head.subnet
                and windows + item.windows <= self.max_batch_windows
                and finish + item.predicted_s - now <= self.max_batch_s
                and item.predicted_s <= slack_after(finish, passed)
            ):
                batch.append(item)
                windows += item.windows
                finish += item.predicted_s
            else:
                passed.append(item)
                heapq.heappush(self._heap, item)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
            batch = self._next_batch()
            if not batch:
                continue
            started = self._clock()
            for item in batch:
                item.started_at = started
            self._inflight_until = started + sum(i.predicted_s for i in batch)
            self.running = len(batch)
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, batch[0].subnet, batch)
            except Exception as exc:  # the model failed: every item of the batch gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                seconds = self._clock() - started
                self.busy_seconds += seconds
                self.running = 0
                self._inflight_until = 0.0
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
            if self._on_batch:
                tokens = max(i.tokens for i in batch)
                self._on_batch(BatchReport(batch[0].subnet, len(batch), sum(i.windows for i in batch), tokens, seconds))
