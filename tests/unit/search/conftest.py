"""A bench of real eval questions on the tiny checkpoint, and a fresh study storage per test."""

from collections.abc import Callable
from pathlib import Path

import pytest

from models.data import squad
from models.infer import checkpoint
from models.infer.reader import Reader
from models.search.timing import Bench
from tests.conftest import DATA

EVAL = DATA / "eval.json.gz"
TinyBench = Callable[[int], Bench]


@pytest.fixture
def tiny_bench(tiny_checkpoint: Path) -> TinyBench:
    """`tiny_bench(n)`: the first n eval questions on a fresh reader of the tiny checkpoint."""

    def bench(questions: int) -> Bench:
        return Bench(Reader(checkpoint.load(tiny_checkpoint)), squad.load_squad(EVAL, limit=questions))

    return bench


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """An Optuna storage of this test's own."""
    return f"sqlite:///{tmp_path / 's.db'}"
