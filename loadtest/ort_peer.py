"""The strongest static peer a CPU user would build: FastAPI + ONNX Runtime on the same full model
(`onnx_model`: fused graph, INT8 by ORT's dynamic quantisation), with dynamic batching.

`python -m loadtest.ort_peer --checkpoint DIR --port N [--precision int8|fp32]` serves POST /v1/qa.
Requests wait at most `--max-wait-ms` for others to share a forward of at most `--max-batch`
windows (the batching every serving guide adds first); one forward at a time on a worker thread,
with ORT's intra-op threads set to the cores this process may use. Windows, offsets and the best
span come from the same code as dynaqa's (`models.data.squad`), so answers differ only by runtime.
Budgets are ignored: it has one model and no choice to make. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from loadtest import onnx_model
from loadtest.peer import Question, peer_app
from models.data import squad


@dataclass
class Waiting:
    example: squad.SquadExample
    windows: squad.Windows
    future: asyncio.Future[dict[str, Any]]


class OrtAnswerer:
    """Tokenise, run windows through the ORT session in padded batches, pick the best spans."""

    def __init__(self, checkpoint_dir: Path, precision: onnx_model.Precision, threads: int) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        self.session = onnx_model.session(onnx_model.build(checkpoint_dir)[precision], threads)

    def windows(self, example: squad.SquadExample) -> squad.Windows:
        return squad.encode(self.tokenizer, [example], squad.MAX_LENGTH, squad.STRIDE)

    def answer_all(self, waiting: list[Waiting]) -> list[dict[str, Any]]:
        """One forward over every window of every waiting request."""
        rows = [(w, ids, types) for w in waiting for ids, types in zip(w.windows.input_ids, w.windows.token_type_ids)]
        width = max(len(ids) for _, ids, _ in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask, types = np.zeros_like(input_ids), np.zeros_like(input_ids)
        for r, (_, ids, segment) in enumerate(rows):
            input_ids[r, : len(ids)], mask[r, : len(ids)], types[r, : len(ids)] = ids, 1, segment
        start, end = onnx_model.logits(self.session, input_ids, mask, types)
        answers, row = [], 0
        for w in waiting:
            n = len(w.windows)
            lengths = [len(ids) for ids in w.windows.input_ids]
            best = squad.best_answer(
                w.example.context,
                w.windows.offsets,
                [start[row + i, :k] for i, k in enumerate(lengths)],
                [end[row + i, :k] for i, k in enumerate(lengths)],
            )
            answers.append({"answer": best.text, "score": best.score, "start": best.start, "end": best.end})
            row += n
        return answers


class DynamicBatcher:
    """Collects requests for up to `max_wait_s`, at most `max_batch` windows (more only when one
    request alone has more), and runs them as one forward."""

    def __init__(self, answerer: OrtAnswerer, max_batch: int, max_wait_s: float) -> None:
        self.answerer = answerer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[Waiting] = asyncio.Queue()

    async def submit(self, question: str, context: str) -> dict[str, Any]:
        example = squad.SquadExample("peer", question, context)
        windows = self.answerer.windows(example)
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Waiting(example, windows, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        held: Waiting | None = None  # a request that would have overfilled the last batch
        while True:
            batch = [held or await self.queue.get()]
            held = None
            deadline = loop.time() + self.max_wait_s
            windows = len(batch[0].windows)
            while windows < self.max_batch:
                try:
                    more = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                if windows + len(more.windows) > self.max_batch:
                    held = more
                    break
                batch.append(more)
                windows += len(more.windows)
            await self._answer(batch)

    async def _answer(self, batch: list[Waiting]) -> None:
        try:
            answers = await asyncio.to_thread(self.answerer.answer_all, batch)
        except Exception as exc:  # a failed forward fails its requests, not the server
            for w in batch:
                if not w.future.done():  # a client that left cancelled its future
                    w.future.set_exception(exc)
            return
        for w, answer in zip(batch, answers, strict=True):
            if not w.future.done():
                w.future.set_result(answer)


def create_ort_peer(answerer: OrtAnswerer, max_batch: int = 8, max_wait_ms: float = 5.0) -> FastAPI:
    batcher = DynamicBatcher(answerer, max_batch, max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def answer(body: Question) -> dict[str, Any]:
        return await batcher.submit(body.question, body.context)

    return peer_app("ONNX Runtime peer", answer, lifespan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--max-batch", type=int, default=8, help="windows per forward at most")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for company")
    args = parser.parse_args(argv)
    answerer = OrtAnswerer(Path(args.checkpoint), args.precision, threads=len(os.sched_getaffinity(0)))
    app = create_ort_peer(answerer, args.max_batch, args.max_wait_ms)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
