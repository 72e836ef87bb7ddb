"""The shipped checkpoint's own claims, re-measured through the public `dynaqa eval` command.

training.json's grid_scores (the README table) and profile.json (the searched front the service
reports as expected F1) must both be reproducible to 0.1 F1 on the whole eval split. Two
representative configurations are checked here (about a minute); `python -m benchmarks.reproduce
--grid` checks every one.
"""

from __future__ import annotations

from benchmarks.reproduce import TOLERANCE, evaluate
from models import checkpoint

SHIPPED = checkpoint.load(checkpoint.DEFAULT_DIR)


def test_the_full_model_reproduces_its_table_row() -> None:
    shipped = SHIPPED.training["grid_scores"]["w100d100"]
    assert abs(evaluate(SHIPPED.path, "w100d100")["f1"] - shipped) <= TOLERANCE


def test_the_fastest_frontier_point_reproduces_its_f1() -> None:
    assert 10 <= len(SHIPPED.profile) <= 30
    fastest = min(SHIPPED.profile, key=lambda e: e.latency_ms or float("inf"))
    result = evaluate(SHIPPED.path, fastest.subnet.id)
    assert abs(result["f1"] - fastest.f1) <= TOLERANCE and abs(result["exact_match"] - fastest.exact_match) <= 0.2
