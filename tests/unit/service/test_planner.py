"""The planner's choice: the most accurate sub-network whose tail fits what is left of the budget."""

import math

from models.nn.subnet import SubnetConfig
from service.planner import Choice, Infeasible, Planner


def test_planner_picks_the_most_accurate_that_fits(planner: Planner) -> None:
    choice = planner.choose(budget_s=0.2, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(1.0, 1.0)
    choice = planner.choose(budget_s=0.03, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.5, 1.0)
    # the queue wait is spent from the budget
    choice = planner.choose(budget_s=0.2, elapsed_s=0.0, queue_wait_s=0.18, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.25, 0.5)


def test_planner_keeps_queued_work_on_time(planner: Planner) -> None:
    """A new item runs before queued work due later (EDF): it may only take their slack."""
    choice = planner.choose(0.2, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.03)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.5, 1.0)
    # no candidate fits the slack: the fastest, since its own budget allows it
    choice = planner.choose(0.2, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.001)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.25, 0.5)


def test_planner_tells_floor_from_load(planner: Planner) -> None:
    floor = planner.choose(budget_s=0.005, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.reason == "floor" and math.isclose(floor.floor_s, 0.013)
    load = planner.choose(budget_s=0.05, elapsed_s=0.0, queue_wait_s=0.045, tokens=100, windows=1)
    assert isinstance(load, Infeasible) and load.reason == "load"


def test_planner_level_caps_quality_and_interpolates(planner: Planner) -> None:
    capped = planner.choose(budget_s=1.0, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1, level=1)
    assert isinstance(capped, Choice) and capped.candidate.subnet == SubnetConfig(0.5, 1.0)
    assert math.isclose(planner.latency.predict(SubnetConfig(1.0, 1.0).id, 250, 1).mean_s, 0.1)
