"""Reserves and the floor: what answers when no candidate above the quality floor ends in time."""

import math

from models.nn.subnet import SubnetConfig
from service.planner import Candidate, Choice, Infeasible, Planner, Point


def test_a_point_below_the_quality_floor_answers_only_what_nothing_else_can(planner: Planner) -> None:
    """The `planner` fixture's F1s are 80 / 75 / 60: a floor at 0.8 of the best drops `small` to the reserves."""
    floored = Planner([*planner.candidates], planner.latency, safety_factor=1.0, tail_sigmas=3.0, min_f1_share=0.8)
    big, mid, small = (c.subnet for c in planner.candidates)
    assert [c.subnet for c in floored.candidates] == [big, mid] and len(floored.reserves) == 1
    assert floored.reserves[-1].subnet == small and floored.rank(floored.reserves[0]) == 2
    # tails at 100 tokens: mid 23 ms, small 13 ms. Queued work's slack (5 ms) fits neither: mid,
    # the fastest candidate, still ends within the budget, so the reserve is not used
    choice = floored.choose(0.2, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.005)
    assert isinstance(choice, Choice) and choice.candidate.subnet == mid
    # 15 ms left: only the reserve ends in time
    choice = floored.choose(0.2, 0.0, 0.185, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == small
    floor = floored.choose(0.005, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.fastest.subnet == small and math.isclose(floor.floor_s, 0.013)
    assert len(Planner([*planner.candidates], planner.latency, min_f1_share=0.5).candidates) == 3  # none below 40


def test_the_floor_is_the_quickest_sub_network_for_this_input(planner: Planner) -> None:
    """The reserve is the fastest point overall, but its correction (it ran 2.5x slower than
    calibrated) puts its tail at 32.5 ms, above mid's 23 ms: the floor is mid's. A 30 ms budget
    with 10 ms of queue is then a matter of load, not below the floor (the reserve's tail said so)."""
    floored = Planner([*planner.candidates], planner.latency, safety_factor=1.0, tail_sigmas=3.0, min_f1_share=0.8)
    _, mid, small = (c.subnet for c in planner.candidates)
    floored.corrections[small.id].ratio = 2.5
    floor = floored.choose(0.005, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.fastest.subnet == mid and math.isclose(floor.floor_s, 0.023)
    loaded = floored.choose(0.03, 0.0, 0.01, tokens=100, windows=1)
    assert isinstance(loaded, Infeasible) and loaded.reason == "load"


def test_a_candidate_quicker_than_every_last_resort_answers_when_they_cannot(planner: Planner) -> None:
    """No quality floor: small (the last candidate) ran 5x slower than calibrated, 65 ms, so mid
    (23 ms) is quickest. With 25 ms left but 5 ms of queued slack, nothing fits the first pass;
    mid still ends in time and answers, where the last candidate alone would have been refused."""
    _, mid, small = (c.subnet for c in planner.candidates)
    planner.corrections[small.id].ratio = 5.0
    choice = planner.choose(0.025, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.005)
    assert isinstance(choice, Choice) and choice.candidate.subnet == mid
    floor = planner.choose(0.02, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.fastest.subnet == mid and floor.reason == "floor"


def test_the_most_accurate_reserve_that_fits_answers_before_the_fastest(planner: Planner) -> None:
    """Two points below the floor: F1 36 at 10 ms and F1 17 at 8 ms per 100 tokens (25% faster, so
    both stay on the front). With 13 ms left the F1-36 one ends in time and answers; with 9 ms left
    only the F1-17 one does."""
    latency = planner.latency
    mid36, junk = SubnetConfig(0.25, 0.5, quantized=True), SubnetConfig(0.25, 0.5, (0.6, 0.3, 0.3), True)
    for subnet, per100 in ((mid36, 0.010), (junk, 0.008)):
        latency.points[subnet.id] = {(t, b): Point(per100 * t / 100 * b, 0.0) for t in (100, 400) for b in (1, 4)}
    candidates = [*planner.candidates[:2], Candidate(mid36, 36.0, 2), Candidate(junk, 17.0, 1)]
    floored = Planner(candidates, latency, safety_factor=1.0, tail_sigmas=3.0, min_f1_share=0.7)
    assert [c.subnet for c in floored.reserves] == [mid36, junk]
    choice = floored.choose(0.2, 0.0, 0.187, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == mid36
    choice = floored.choose(0.2, 0.0, 0.191, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == junk
    assert floored.rank(floored.reserves[1]) == 3
