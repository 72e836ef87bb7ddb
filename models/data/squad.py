"""SQuAD v1.1 handling shared by training, evaluation and the service.

Question + context are tokenised together with character offsets; a context longer than the
window is split into overlapping windows (`stride` tokens of overlap); the answer is the best
span over all windows (start <= end, at most `max_answer_tokens`), returned as a slice of the
original context with character offsets.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.errors import InvalidInput

# The eval split of the project's shared SQuAD data, beside the checkout: the default --data of the
# commands and benchmarks (train.json.gz lies beside it).
DEFAULT_EVAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad" / "eval.json.gz"
MAX_LENGTH = 384
STRIDE = 128
MAX_QUESTION_TOKENS = 64
MAX_ANSWER_TOKENS = 30
N_BEST = 20


@dataclass(frozen=True)
class SquadExample:
    qid: str
    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    article: int = 0  # its article's place in the file: held-out reports split by article


@dataclass(frozen=True)
class Answer:
    """Best span: text sliced from the context, its character offsets and its probability."""

    text: str
    score: float
    start: int
    end: int
    logit: float


@dataclass
class Windows:
    """Tokenised windows of one or more (question, context) pairs, unpadded."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    offsets: list[list[tuple[int, int] | None]]  # per token: char span in the context, or None
    example_index: list[int]
    labels: list[tuple[int, int]] = field(default_factory=list)  # (start, end) token, (0, 0) if absent

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not readable JSON: {exc}") from exc


def load_squad(path: Path | str, limit: int | None = None) -> list[SquadExample]:
    """Examples of a SQuAD v1.1 file (plain or gzipped), in file order, first `limit` only."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InvalidInput(f"{path} is not SQuAD v1.1 JSON (no top-level 'data' list)")
    examples = []
    try:
        for index, article in enumerate(data["data"]):
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    examples.append(
                        SquadExample(
                            qid=str(qa["id"]),
                            question=qa["question"],
                            context=paragraph["context"],
                            answers=tuple(a["text"] for a in qa.get("answers", [])),
                            answer_starts=tuple(int(a["answer_start"]) for a in qa.get("answers", [])),
                            article=index,
                        )
                    )
                    if limit is not None and len(examples) >= limit:
                        return examples
    except (KeyError, TypeError) as exc:
        raise InvalidInput(f"{path} is not SQuAD v1.1 JSON: missing or malformed {exc}") from exc
    return examples


def validate_pair(question: str, context: str) -> None:
    """Reject what cannot be answered, naming the field."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("question is empty")
    if not isinstance(context, str) or not context.strip():
        raise InvalidInput("context is empty or only white space")


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's WordPiece tokenizer (fast, with offsets), read from local files only."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"no usable tokenizer in {path}: {exc}") from exc


def _clip_question(tokenizer: Any, question: str, max_tokens: int) -> str:
    """Cut an over-long question at a token boundary so the context always gets room."""
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoded["input_ids"]) <= max_tokens:
        return question
    return question[: encoded["offset_mapping"][max_tokens - 1][1]]


def encode(
    tokenizer: Any,
    examples: list[SquadExample],
    max_length: int = MAX_LENGTH,
    stride: int = STRIDE,
    with_labels: bool = False,
) -> Windows:
    """Tokenise examples into overlapping windows; with labels for training."""
    if stride >= max_length - MAX_QUESTION_TOKENS - 3:
        raise InvalidInput(f"stride {stride} leaves no room in a {max_length}-token window")
    for example in examples:
        validate_pair(example.question, example.context)
    questions = [_clip_question(tokenizer, e.question.lstrip(), MAX_QUESTION_TOKENS) for e in examples]
    encoded = tokenizer(
        questions,
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    windows = Windows([], [], [], [])
    for i, ids in enumerate(encoded["input_ids"]):
        sequence = encoded.sequence_ids(i)
        offsets = [tuple(span) if seq == 1 else None for span, seq in zip(encoded["offset_mapping"][i], sequence)]
        windows.input_ids.append(ids)
        windows.token_type_ids.append(encoded["token_type_ids"][i])
        windows.offsets.append(offsets)  # type: ignore[arg-type]
        example_index = encoded["overflow_to_sample_mapping"][i]
        windows.example_index.append(example_index)
        if with_labels:
            windows.labels.append(_label(offsets, examples[example_index]))  # type: ignore[arg-type]
    return windows


def _label(offsets: list[tuple[int, int] | None], example: SquadExample) -> tuple[int, int]:
    """Token span of the first gold answer in this window, or (0, 0) ([CLS]) if it is not inside."""
    if not example.answers:
        return 0, 0
    char_start = example.answer_starts[0]
    char_end = char_start + len(example.answers[0])
    start = end = None
    for index, span in enumerate(offsets):
        if span is None:
            continue
        if start is None and span[0] <= char_start < span[1]:
            start = index
        if span[0] < char_end <= span[1]:
            end = index
    if start is None or end is None or end < start:
        return 0, 0
    return start, end


def collate(windows: Windows, indices: list[int], pad_id: int = 0) -> dict[str, Tensor]:
    """Pad the chosen windows to their longest (dynamic padding) as model inputs."""
    longest = max(len(windows.input_ids[i]) for i in indices)
    ids = np.full((len(indices), longest), pad_id, dtype=np.int64)
    types = np.zeros((len(indices), longest), dtype=np.int64)
    mask = np.zeros((len(indices), longest), dtype=np.int64)
    for row, i in enumerate(indices):
        n = len(windows.input_ids[i])
        ids[row, :n] = windows.input_ids[i]
        types[row, :n] = windows.token_type_ids[i]
        mask[row, :n] = 1
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
    }
    if windows.labels:
        batch["start_positions"] = torch.tensor([windows.labels[i][0] for i in indices])
        batch["end_positions"] = torch.tensor([windows.labels[i][1] for i in indices])
    return batch


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def best_answer(
    context: str,
    offsets: list[list[tuple[int, int] | None]],
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    n_best: int = N_BEST,
) -> Answer:
    """Best span over all windows of one example, by start + end logit (the SQuAD convention)."""
    return best_answers(context, offsets, start_logits, end_logits, 1, max_answer_tokens, n_best)[0]


def best_answers(
    context: str,
    offsets: list[list[tuple[int, int] | None]],
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    top_k: int = 1,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    n_best: int = N_BEST,
) -> list[Answer]:
    """The `top_k` best distinct spans over all windows, best first (at least one: an empty
    answer when no window has a valid span).

    `score` is what the Hugging Face QA pipeline reports: the span's start x end probability,
    normalised over the context tokens of its window.
    """
    spans: dict[tuple[int, int], Answer] = {}
    for window_offsets, start, end in zip(offsets, start_logits, end_logits):
        for answer in _window_spans(context, window_offsets, start, end, max(top_k, 1), max_answer_tokens, n_best):
            kept = spans.get((answer.start, answer.end))
            if kept is None or answer.logit > kept.logit:  # the same text seen from two windows: once
                spans[(answer.start, answer.end)] = answer
    ranked = sorted(spans.values(), key=lambda a: -a.logit)[: max(top_k, 1)]
    return ranked or [Answer("", 0.0, 0, 0, float("-inf"))]


def _window_spans(
    context: str,
    window_offsets: list[tuple[int, int] | None],
    start: np.ndarray,
    end: np.ndarray,
    top_k: int,
    max_answer_tokens: int,
    n_best: int,
) -> list[Answer]:
    """The `top_k` best valid spans of one window from its `n_best` starts x `n_best` ends."""
    n = len(window_offsets)
    is_context = np.array([span is not None for span in window_offsets])
    start = np.where(is_context, start[:n], -np.inf)
    end = np.where(is_context, end[:n], -np.inf)
    k = min(n_best, int(is_context.sum()))
    if k == 0:
        return []
    starts = np.argsort(start)[::-1][:k]
    ends = np.argsort(end)[::-1][:k]
    pair_logit = start[starts][:, None] + end[ends][None, :]  # (k, k)
    span_length = ends[None, :] - starts[:, None]
    pair_logit = np.where((span_length >= 0) & (span_length < max_answer_tokens), pair_logit, -np.inf)
    start_p, end_p = _softmax(start[is_context]), _softmax(end[is_context])
    found = []
    for flat in np.argsort(-pair_logit, axis=None, kind="stable")[:top_k]:
        logit = float(pair_logit.flat[flat])
        if logit == -np.inf:
            break
        s, e = int(starts[flat // k]), int(ends[flat % k])
        char_start, char_end = window_offsets[s][0], window_offsets[e][1]  # type: ignore[index]
        probability = float(start_p[is_context[:s].sum()]) * float(end_p[is_context[:e].sum()])
        found.append(Answer(context[char_start:char_end], probability, char_start, char_end, logit))
    return found
