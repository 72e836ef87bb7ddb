"""SQuAD handling: windows, offsets, best span over windows, the official metric."""

from pathlib import Path

import numpy as np
import pytest

from models.data import metric, squad
from models.data.squad import SquadExample
from models.errors import InvalidInput
from tests.conftest import DATA


@pytest.fixture(scope="module")
def tokenizer(base_dir: Path):  # type: ignore[no-untyped-def]
    return squad.load_tokenizer(base_dir)


def test_official_metric_reproduces_the_reference_scores() -> None:
    examples = squad.load_squad(DATA / "eval.json.gz")
    predictions = squad.read_json(DATA / "reference-predictions-eval.json")
    scores = metric.score({e.qid: e.answers for e in examples}, predictions)
    assert scores["n"] == 2594
    assert round(scores["exact_match"], 3) == 84.657
    assert round(scores["f1"], 3) == 90.985


def test_metric_normalisation() -> None:
    assert metric.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert metric.exact_match("an apple", "Apple.") == 1.0
    assert metric.f1_score("big red dog", "red dog") == pytest.approx(0.8)
    assert metric.f1_score("", "dog") == 0.0


def test_long_contexts_are_split_into_overlapping_windows(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = " ".join(f"word{i}" for i in range(400))
    example = SquadExample("q", "which word?", context, ("word350",), (context.index("word350"),))
    windows = squad.encode(tokenizer, [example], max_length=128, stride=32, with_labels=True)
    assert len(windows) > 3 and all(n <= 128 for n in windows.lengths())
    # consecutive windows overlap by `stride` context tokens
    first = [o for o in windows.offsets[0] if o is not None]
    second = [o for o in windows.offsets[1] if o is not None]
    assert first[-32:] == second[:32]
    labelled = [i for i, label in enumerate(windows.labels) if label != (0, 0)]
    assert labelled
    for i in labelled:
        s, e = windows.labels[i]
        assert context[windows.offsets[i][s][0] : windows.offsets[i][e][1]] == "word350"


def test_best_span_over_windows_is_a_slice_of_the_context(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = "Paris is the capital of France. " * 40 + "The answer is Zanzibar island."
    example = SquadExample("q", "what is the answer?", context)
    windows = squad.encode(tokenizer, [example], max_length=96, stride=24)
    target = context.rindex("Zanzibar")
    starts, ends = [], []
    for offsets in windows.offsets:
        s = np.full(len(offsets), -5.0)
        e = np.full(len(offsets), -5.0)
        for t, span in enumerate(offsets):
            if span and span[0] == target:
                s[t] = 8.0
            if span and span[1] == target + len("Zanzibar island"):
                e[t] = 8.0
        starts.append(s)
        ends.append(e)
    answer = squad.best_answer(context, windows.offsets, starts, ends)
    assert answer.text == "Zanzibar island" and context[answer.start : answer.end] == answer.text
    assert 0.0 < answer.score <= 1.0


def test_max_answer_length_is_respected(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = " ".join(["alpha"] * 60)
    windows = squad.encode(tokenizer, [SquadExample("q", "what?", context)])
    n = len(windows.offsets[0])
    start = np.zeros(n)
    end = np.zeros(n)
    first_context = next(i for i, o in enumerate(windows.offsets[0]) if o)
    start[first_context] = 10.0
    end[first_context + 50] = 10.0
    answer = squad.best_answer(context, windows.offsets, [start], [end], max_answer_tokens=30)
    assert len(answer.text.split()) <= 30


@pytest.mark.parametrize(("question", "context", "field"), [("", "ctx", "question"), ("q?", "   \n ", "context")])
def test_empty_inputs_are_rejected(tokenizer, question: str, context: str, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match=field):
        squad.encode(tokenizer, [SquadExample("q", question, context)])


def test_a_huge_question_is_clipped_not_fatal(tokenizer) -> None:  # type: ignore[no-untyped-def]
    windows = squad.encode(tokenizer, [SquadExample("q", "why " * 500, "Because it is.")])
    assert len(windows) == 1 and windows.lengths()[0] <= 384


def test_bad_data_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        squad.load_squad(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(InvalidInput, match="paragraphs"):
        squad.load_squad(tmp_path / "bad.json")
