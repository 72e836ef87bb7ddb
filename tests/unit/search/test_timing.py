"""Side-by-side timing: every configuration runs the same block of questions in turn."""

from pathlib import Path

import pytest

from models.data import squad
from models.errors import InvalidSubnet
from models.infer import checkpoint
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.search import timing
from tests.unit.search.conftest import EVAL


def test_side_by_side_timing_needs_a_round() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        timing.side_by_side(None, [SubnetConfig(1.0, 1.0)], rounds=0)  # type: ignore[arg-type]


class RecordingReader(Reader):
    """The real reader, noting which configuration ran which question, in order."""

    calls: list[tuple[str, int]]
    question: dict[int, int]  # id of a question's windows -> its index in the bench

    def logits(self, windows, indices, subnet):  # type: ignore[no-untyped-def]
        self.calls.append((subnet.id, self.question[id(windows)]))
        return super().logits(windows, indices, subnet)


def test_side_by_side_times_every_configuration_on_the_same_block_in_turn(tiny_checkpoint: Path) -> None:
    """Drift must hit every configuration alike: each runs the same few questions (after one
    untimed) before the next block starts, and the median over rounds comes back per config."""
    reader = RecordingReader(checkpoint.load(tiny_checkpoint))
    bench = timing.Bench(reader, squad.load_squad(EVAL, limit=12))
    reader.question = {id(w): i for i, w in enumerate(bench.windows)}
    full, narrow = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 0.5)
    reader.calls = []
    ms = bench.blocked_pass([full, narrow], block=5)
    assert set(ms) == {full, narrow} and all(v > 0 for v in ms.values())
    turns = [(0, range(5)), (5, range(5, 10)), (10, range(10, 12))]
    expected = [(s.id, q) for first, block in turns for s in (full, narrow) for q in (first, *block)]
    assert reader.calls == expected
    reader.calls = []
    latency = timing.side_by_side(bench, [full, narrow], rounds=3)
    assert set(latency) == {full, narrow} and all(v > 0 for v in latency.values())
    warm_ups = 2 * timing.WARMUP
    blocks = -(-12 // timing.TIMING_BLOCK)
    assert len(reader.calls) == warm_ups + 3 * 2 * (12 + blocks)  # rounds x configs x (timed + 1 per block)
    reader.calls = []
    timing.side_by_side(bench, [full, narrow], rounds=1, block=5)  # the block asked for, not the default
    assert reader.calls[warm_ups:] == expected
    with pytest.raises(InvalidSubnet):
        timing.side_by_side(bench, [SubnetConfig(1.0, 1.0, (1.0,))], rounds=1)  # wrong length count


class ClockBench(timing.Bench):
    """A bench whose question i takes i + 1 seconds: the means say which forwards were timed."""

    def __init__(self, questions: int) -> None:
        self.windows = [None] * questions  # type: ignore[list-item]

    def forward(self, index, subnet):  # type: ignore[no-untyped-def]
        return float(index + 1), [], []


def test_a_blocked_pass_averages_every_question_once_and_no_turn_starter() -> None:
    full, narrow = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 0.5)
    ms = ClockBench(12).blocked_pass([full, narrow], block=5)  # the untimed turn starters: 1, 6 and 11 s
    assert ms == {full: 6500.0, narrow: 6500.0}  # the mean of 1..12 s, in ms
