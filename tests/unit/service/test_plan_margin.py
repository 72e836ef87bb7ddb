"""The plan margin: time kept free after plans that ran late."""

import math

import pytest

from models.nn.subnet import SubnetConfig
from service.planner import Choice, PlanMargin, Planner


def test_plan_overruns_reserve_a_margin_until_plans_hold_again(planner: Planner) -> None:
    """Requests that ran past their plan (waits longer than predicted) make later choices faster."""
    assert planner.choose(0.05, 0.0, 0.0, tokens=100, windows=1).candidate.subnet == SubnetConfig(1.0, 1.0)
    for t in range(20):
        planner.observe_plan(planned_s=0.05, actual_s=0.075, budget_s=0.06, now_s=t)  # 25 ms late, every time
    assert math.isclose(planner.margin.margin_s, 0.025)
    # 50 ms budget - 25 ms margin: the 43 ms tail of the big one no longer fits, the mid one does
    choice = planner.choose(0.05, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.5, 1.0)
    # a budget only the fastest fits once the margin is kept free: still answered, never refused
    choice = planner.choose(0.02, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.25, 0.5)
    for t in range(20, 220):  # plans hold again: the old overruns leave the window, the margin goes
        planner.observe_plan(planned_s=0.05, actual_s=0.04, budget_s=0.06, now_s=20 + t / 100)
    assert planner.margin.margin_s == 0.0
    assert planner.choose(0.05, 0.0, 0.0, tokens=100, windows=1).candidate.subnet == SubnetConfig(1.0, 1.0)


def test_plan_margin_is_a_high_quantile_of_tight_plans_and_forgets_old_ones() -> None:
    margin = PlanMargin(window=100, quantile=0.95, horizon_s=30.0)
    for i in range(100):
        margin.observe(0.1, 0.1 + 0.001 * i, budget_s=0.1, now_s=0.0)  # overruns of 0..99 ms
    assert math.isclose(margin.margin_s, 0.094)  # nearest rank: 95 of 100 are at most this
    margin.observe(0.1, 5.0, budget_s=60.0, now_s=1.0)  # a loose plan overtaken by design: not sampled
    assert math.isclose(margin.margin_s, 0.094)
    margin.expire(now_s=31.0)  # a quiet server forgets
    assert margin.margin_s == 0.0
    with pytest.raises(ValueError):
        PlanMargin(quantile=0.0)
