"""The shipped checkpoint's own claims, re-measured through the public `dynaqa eval` command.

training.json's grid_scores (the README table) and profile.json (the searched front the service
reports as expected F1) must both be reproducible to 0.1 F1 on the whole eval split. Two
representative configurations are checked here (about a minute); `python -m benchmarks.reproduce
--grid` checks every one.
"""

from __future__ import annotations

import pytest

from benchmarks.reproduce import TOLERANCE, evaluate
from models.infer import checkpoint
from models.infer.quantize import int8_enabled, int8_kernel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shipped() -> checkpoint.Checkpoint:
    return checkpoint.load(checkpoint.DEFAULT_DIR)  # loaded when these tests run, not at collection


def test_the_full_model_reproduces_its_table_row(shipped: checkpoint.Checkpoint) -> None:
    recorded = shipped.training["grid_scores"]["w100d100"]
    assert abs(evaluate(shipped.path, "w100d100")["f1"] - recorded) <= TOLERANCE


def test_the_fastest_frontier_point_reproduces_its_f1(shipped: checkpoint.Checkpoint) -> None:
    """The fastest point of the front searched on this CPU's kind: the INT8 front of the kernel it
    runs where INT8 pays, else the float-only front, else the float grid's fastest pair (INT8
    scores differ by tenths of a point between kernels, and an INT8 eval of the whole split takes
    minutes on a CPU without an int8 kernel)."""
    # Both AVX2 fronts are shipped; `pareto` (oneDNN's) may be empty: its search needs a VNNI CPU.
    assert all(10 <= len(shipped.fronts.get(key, [])) <= 30 for key in ("pareto_fbgemm", "pareto_float"))
    assert len(shipped.fronts["pareto"]) in (0, *range(10, 31))
    assert not any(e.subnet.quantized for e in shipped.front(False))
    int8 = int8_enabled("auto")
    front = shipped.fronts.get(checkpoint.FRONT_KEYS[int8_kernel() if int8 else None], [])
    if front:
        fastest = min(front, key=lambda e: e.latency_ms or float("inf"))
        subnet_id, f1, em = fastest.subnet.id, fastest.f1, fastest.exact_match
    else:
        subnet_id, f1, em = "w25d50", shipped.training["grid_scores"]["w25d50"], None
    result = evaluate(shipped.path, subnet_id)
    assert abs(result["f1"] - f1) <= TOLERANCE and (em is None or abs(result["exact_match"] - em) <= 0.2)
