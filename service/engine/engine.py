"""The engine: a request's way from the route to the model and back, and the loop that feeds
the executor from the scheduler.

`answer` tokenises, asks the scheduler for a ticket (or its refusal) and waits for the ticket's
result. The loop asks the scheduler for the next batch, has the executor run it, and hands the
report back to the scheduler. Each arrow is one call; nothing calls back up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from models.data.squad import Answer, SquadExample
from models.errors import InvalidInput
from models.infer.reader import Asked
from service.budget import Budget
from service.engine.executor import BatchFailed, Executor
from service.engine.queue import Ticket
from service.engine.scheduler import BatchPlan, Place, Request, Scheduler
from service.errors import Expired, Overloaded, PayloadTooLarge, ServiceError
from service.metrics import Metrics
from service.planner import Candidate

LONG_CONTEXT_CHARS = 4000  # tokenising longer contexts takes milliseconds: off the event loop


@dataclass(frozen=True)
class Result:
    answers: list[Answer]  # best first; `top_k` of them at most
    candidate: Candidate
    budget: Budget
    fits: bool
    below_floor: bool  # nothing could meet this budget even on an idle server: not a load signal
    planned_s: float  # arrival to answer as planned
    queue_s: float
    model_s: float
    latency_s: float  # arrival to answer computed
    arrival: float  # perf_counter seconds when the app first saw the request

    @property
    def answer(self) -> Answer:
        return self.answers[0]

    @property
    def budget_met(self) -> bool:
        return self.latency_s * 1000 <= self.budget.ms


@dataclass(frozen=True)
class Limits:
    """Input sizes a request may have (413 past the context's, 422 past the question's)."""

    max_context_chars: int
    max_question_chars: int


class Engine:
    def __init__(self, scheduler: Scheduler, executor: Executor, metrics: Metrics, limits: Limits) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.metrics = metrics
        self.limits = limits
        self._waiting: dict[int, asyncio.Future[tuple[list[Answer], float]]] = {}  # by ticket seq
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def answer(
        self, question: str, context: str, budget: Budget, arrival: float, place: Place | None = None, top_k: int = 1
    ) -> Result:
        """Plan, queue and compute one request; a refusal is raised as its ServiceError."""
        return (await self.answer_all([(question, context)], budget, arrival, place, top_k))[0]

    async def answer_all(
        self, pairs: list[tuple[str, str]], budget: Budget, arrival: float, place: Place | None = None, top_k: int = 1
    ) -> list[Result]:
        """Several questions under one budget: each is planned and batched with the rest of the
        traffic, all toward one deadline. Every pair is checked and every queue place reserved
        before anything is queued, so a bad pair or a full queue refuses the whole call and
        changes nothing; one failing pair cancels the others (their queued work is dropped)."""
        if not pairs:
            raise InvalidInput("no questions to answer")
        if len(pairs) > self.scheduler.max_queue:  # could never be queued at once: no retry helps
            raise PayloadTooLarge(f"{len(pairs)} questions in one call; this replica queues {self.scheduler.max_queue}")
        refusal = self.scheduler.refusal(place)
        if refusal is not None:
            raise refusal
        for question, context in pairs:
            self.check(question, context)
        reserved: list[Place] = []  # the caller's own place is the caller's to release
        try:
            while len(reserved) + (place is not None) < len(pairs):
                extra = self.scheduler.reserve()
                if isinstance(extra, ServiceError):
                    raise extra
                reserved.append(extra)
            places = ([place] if place is not None else []) + reserved
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._answer(q, c, budget, arrival, held, top_k))
                    for (q, c), held in zip(pairs, places, strict=True)
                ]
        except* Exception as failed:  # the first error to end a pair is the call's (a refusal, a model error)
            raise failed.exceptions[0] from None
        finally:
            for held in reserved:
                held.release()
        return [task.result() for task in tasks]

    def check(self, question: str, context: str) -> None:
        """The size limits: 413 past the context's, 422 past the question's."""
        if len(context) > self.limits.max_context_chars:
            raise PayloadTooLarge(
                f"context has {len(context)} characters; the limit is {self.limits.max_context_chars}"
            )
        if len(question) > self.limits.max_question_chars:
            raise InvalidInput(
                f"question has {len(question)} characters; the limit is {self.limits.max_question_chars}"
            )

    async def _answer(
        self, question: str, context: str, budget: Budget, arrival: float, place: Place | None, top_k: int
    ) -> Result:
        reader = self.executor.reader
        assert reader is not None
        example = SquadExample("request", question, context)
        if len(context) > LONG_CONTEXT_CHARS:
            windows = await asyncio.to_thread(reader.windows, [example])
        else:
            windows = reader.windows([example])
        request = Request(budget, arrival, max(windows.lengths()), len(windows), Asked(example, windows, top_k))
        ticket = self.scheduler.add(request, place)
        if isinstance(ticket, ServiceError):
            raise ticket
        answers, model_s = await self._wait(ticket)
        done = time.perf_counter()
        served = self.scheduler.served(ticket)
        if served.downgraded:
            self.metrics.downgraded.inc()
        return Result(
            answers,
            served.candidate,
            budget,
            served.fits,
            served.below_floor,
            served.planned_s,
            ticket.started_at - arrival,
            model_s,
            done - arrival,
            arrival,
        )

    async def _wait(self, ticket: Ticket) -> tuple[list[Answer], float]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[ticket.seq] = future
        self._wake.set()
        self.metrics.inflight.inc()
        try:
            return await future
        except asyncio.CancelledError:  # the client left: a queued ticket is never computed
            self.scheduler.cancel(ticket)
            raise
        finally:
            self._waiting.pop(ticket.seq, None)
            self.metrics.inflight.dec()

    def settle(self, result: Result, sent_at: float) -> None:
        """The response's last byte was handed to the transport at `sent_at`: feed the plan margin."""
        if result.fits:
            self.scheduler.on_sent(result.planned_s, sent_at - result.arrival, result.budget, sent_at)

    # --- the loop ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynaqa-engine")

    async def stop(self) -> None:
        """Stop the loop; what is still queued is refused (the drain before has given it time)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for ticket in self.scheduler.queue.drain():
            self._settle(ticket, Overloaded("the server is shutting down", retry_after_s=1.0))

    async def _loop(self) -> None:
        while True:
            if not self.scheduler.depth:
                self._wake.clear()
                await self._wake.wait()
            plan = self.scheduler.next_batch()
            for ticket in plan.expired:
                self._settle(ticket, Expired("deadline passed while queued; dropped before compute"))
            if plan.tickets:
                await self._run(plan)

    async def _run(self, plan: BatchPlan) -> None:
        if plan.replan is not None:
            self.metrics.replans.labels(plan.replan).inc()
        try:
            answers, report = await self.executor.run(plan)
        except BatchFailed as failed:  # every ticket of the batch gets the model's error
            self.scheduler.on_batch_done(failed.report)
            for ticket in plan.tickets:
                self._settle(ticket, failed.__cause__ or failed)
            return
        self.scheduler.on_batch_done(report)
        self.metrics.model_seconds.observe(report.seconds)
        self.metrics.batch_size.observe(report.items)
        self.metrics.prediction_ratio.set(self.scheduler.planner.drift())
        self.metrics.pace.set(self.scheduler.planner.pace.factor)
        for ticket, answer in zip(plan.tickets, answers, strict=True):
            self._settle(ticket, answer)

    def _settle(self, ticket: Ticket, outcome: tuple[list[Answer], float] | BaseException) -> None:
        """Hand `outcome` to the request waiting for `ticket`, if it still waits."""
        ticket.done = True
        future = self._waiting.get(ticket.seq)
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
