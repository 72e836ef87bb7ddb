"""Answering questions with a loaded checkpoint: windows in, best span out.

The one place that turns text into model inputs and logits into answers, shared by `dynaqa eval`,
the search and the service, so all three score exactly the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from models.data import squad
from models.data.squad import Answer, SquadExample, Windows
from models.infer.checkpoint import Checkpoint
from models.nn.subnet import SubnetConfig


class Asked(NamedTuple):
    """One question as the engine queues it: tokenised, with how many answers it wants."""

    example: SquadExample
    windows: Windows
    top_k: int = 1


class Reader:
    """Runs a checkpoint's sub-networks over SQuAD-style inputs."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        max_length: int = squad.MAX_LENGTH,
        stride: int = squad.STRIDE,
        max_answer_tokens: int = squad.MAX_ANSWER_TOKENS,
    ) -> None:
        self.checkpoint = checkpoint
        self.max_length = max_length
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        # The fast tokenizer keeps truncation settings as shared state and releases the GIL:
        # two threads encoding at once can produce windows longer than the model accepts.
        self._tokenizer_lock = threading.Lock()

    def windows(self, examples: list[SquadExample]) -> Windows:
        with self._tokenizer_lock:
            return squad.encode(self.checkpoint.tokenizer, examples, self.max_length, self.stride)

    def logits(
        self, windows: Windows, indices: list[int], subnet: SubnetConfig
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Start/end logits of the chosen windows, run as one dynamically padded batch."""
        batch = squad.collate(windows, indices, self.checkpoint.config.pad_token_id)
        with torch.inference_mode():
            out = self.checkpoint.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], subnet)
        start, end = out.start_logits.float().numpy(), out.end_logits.float().numpy()  # bf16 models too
        lengths = [len(windows.input_ids[i]) for i in indices]
        return [start[r, :n] for r, n in enumerate(lengths)], [end[r, :n] for r, n in enumerate(lengths)]

    def decode(
        self,
        example: SquadExample,
        windows: Windows,
        indices: list[int],
        start: list[np.ndarray],
        end: list[np.ndarray],
        top_k: int = 1,
    ) -> list[Answer]:
        """The `top_k` best distinct spans of one example, best first."""
        return squad.best_answers(
            example.context,
            [windows.offsets[i] for i in indices],
            start,
            end,
            top_k,
            self.max_answer_tokens,
        )

    def answer(self, question: str, context: str, subnet: SubnetConfig) -> Answer:
        """Best answer for one question, over every window of its context."""
        example = SquadExample("q", question, context)
        windows = self.windows([example])
        indices = list(range(len(windows)))
        start, end = self.logits(windows, indices, subnet)
        return self.decode(example, windows, indices, start, end)[0]

    def answer_batch(self, requests: list[Asked], subnet: SubnetConfig) -> list[list[Answer]]:
        """Answers for several already-windowed questions run as one forward (micro-batching)."""
        merged = Windows([], [], [], [])
        spans = []
        for asked in requests:
            begin = len(merged)
            merged.input_ids += asked.windows.input_ids
            merged.token_type_ids += asked.windows.token_type_ids
            merged.offsets += asked.windows.offsets
            merged.example_index += [len(spans)] * len(asked.windows)
            spans.append(range(begin, len(merged)))
        start, end = self.logits(merged, list(range(len(merged))), subnet)
        return [
            self.decode(
                asked.example, merged, list(rows), [start[i] for i in rows], [end[i] for i in rows], asked.top_k
            )
            for asked, rows in zip(requests, spans, strict=True)
        ]

    def predict(
        self,
        examples: list[SquadExample],
        subnet: SubnetConfig,
        batch_size: int = 16,
        progress: bool = True,
    ) -> tuple[dict[str, Answer], Windows]:
        """Answers for many examples; windows batched by similar length to keep padding small."""
        self.checkpoint.check(subnet)
        windows = self.windows(examples)
        start: list[np.ndarray | None] = [None] * len(windows)
        end: list[np.ndarray | None] = [None] * len(windows)
        bar = tqdm(total=len(windows), desc=f"eval {subnet.id}", unit="win", disable=not progress)
        for indices in _length_batches(windows, batch_size):
            batch_start, batch_end = self.logits(windows, indices, subnet)
            for i, s, e in zip(indices, batch_start, batch_end):
                start[i], end[i] = s, e
            bar.update(len(indices))
        bar.close()
        by_example: dict[int, list[int]] = {}
        for i, example_index in enumerate(windows.example_index):
            by_example.setdefault(example_index, []).append(i)
        answers = {}
        for example_index, indices in by_example.items():
            example = examples[example_index]
            answers[example.qid] = self.decode(
                example,
                windows,
                indices,
                [start[i] for i in indices],
                [end[i] for i in indices],  # type: ignore[misc]
            )[0]
        return answers, windows


def _length_batches(windows: Windows, batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(windows)), key=lambda i: len(windows.input_ids[i]))
    for begin in range(0, len(order), batch_size):
        yield order[begin : begin + batch_size]
