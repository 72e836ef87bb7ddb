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
from models.quantize import int8_enabled


@pytest.fixture(scope="module")
def shipped() -> checkpoint.Checkpoint:
    return checkpoint.load(checkpoint.DEFAULT_DIR)  # loaded when these tests run, not at collection


def test_the_full_model_reproduces_its_table_row(shipped: checkpoint.Checkpoint) -> None:
    recorded = shipped.training["grid_scores"]["w100d100"]
    assert abs(evaluate(shipped.path, "w100d100")["f1"] - recorded) <= TOLERANCE


def test_the_fastest_frontier_point_reproduces_its_f1(shipped: checkpoint.Checkpoint) -> None:
    """The fastest point of what this CPU serves: the INT8 front where INT8 pays, else the
    float-only front, else the float grid's fastest pair (an INT8 eval of the whole split takes
    minutes on a CPU without an int8 kernel)."""
    assert 10 <= len(shipped.profile) <= 30
    front = shipped.front(int8_enabled("auto"))
    if front:
        assert 10 <= len(front) <= 30 and not any(e.subnet.quantized for e in shipped.float_profile)
        fastest = min(front, key=lambda e: e.latency_ms or float("inf"))
        subnet_id, f1, em = fastest.subnet.id, fastest.f1, fastest.exact_match
    else:
        subnet_id, f1, em = "w25d50", shipped.training["grid_scores"]["w25d50"], None
    result = evaluate(shipped.path, subnet_id)
    assert abs(result["f1"] - f1) <= TOLERANCE and (em is None or abs(result["exact_match"] - em) <= 0.2)
