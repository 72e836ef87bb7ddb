"""The shipped checkpoint's own claims, re-measured through the public `dynaqa eval` command.

training.json's grid_scores (the README table) and profile.json (the searched front the service
reports as expected F1) must both be reproducible to 0.1 F1 on the whole eval split. Two
representative configurations are checked here (about a minute); `python -m benchmarks.reproduce
--grid` checks every one.
"""

from __future__ import annotations

import pytest

from benchmarks.reproduce import TOLERANCE, evaluate
from models import checkpoint


@pytest.fixture(scope="module")
def shipped() -> checkpoint.Checkpoint:
    return checkpoint.load(checkpoint.DEFAULT_DIR)  # loaded when these tests run, not at collection


def test_the_full_model_reproduces_its_table_row(shipped: checkpoint.Checkpoint) -> None:
    recorded = shipped.training["grid_scores"]["w100d100"]
    assert abs(evaluate(shipped.path, "w100d100")["f1"] - recorded) <= TOLERANCE


def test_the_fastest_frontier_point_reproduces_its_f1(shipped: checkpoint.Checkpoint) -> None:
    assert 10 <= len(shipped.profile) <= 30
    fastest = min(shipped.profile, key=lambda e: e.latency_ms or float("inf"))
    result = evaluate(shipped.path, fastest.subnet.id)
    assert abs(result["f1"] - fastest.f1) <= TOLERANCE and abs(result["exact_match"] - fastest.exact_match) <= 0.2
