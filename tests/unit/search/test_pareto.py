"""Pareto filtering on hand-made measurements: the front, ranks peeled in order, front comparisons."""

from models.nn.subnet import SubnetConfig
from models.search import pareto


def test_pareto_front_keeps_only_non_dominated() -> None:
    m = pareto.Measurement
    a, b, c = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 0.5)
    front = pareto.pareto_front([m(a, 80, 70, 50, 1), m(b, 70, 60, 60, 1), m(c, 60, 50, 10, 1)])
    assert [x.subnet for x in front] == [c, a]
    twice = pareto.pareto_front([m(a, 80, 70, 50, 1), m(a, 80, 70, 45, 1), m(c, 60, 50, 10, 1)])
    assert [(x.subnet, x.latency_ms) for x in twice] == [(c, 10), (a, 45)]  # measured twice: the fastest


def test_pareto_ranks_peel_fronts_in_order() -> None:
    m = pareto.Measurement
    a, b, c, d = SubnetConfig(1.0, 1.0), SubnetConfig(0.75, 1.0), SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 0.5)
    ranks = pareto.pareto_ranks([m(a, 80, 70, 50, 1), m(b, 79, 69, 60, 1), m(c, 70, 60, 20, 1), m(d, 60, 50, 30, 1)])
    assert [[x.subnet for x in r] for r in ranks] == [[c, a], [d, b]]
    assert pareto.pareto_ranks([]) == []


def test_frontier_comparisons_on_known_points() -> None:
    m = pareto.Measurement
    joint = [m(SubnetConfig(0.25, 0.5), 60, 50, 5, 1), m(SubnetConfig(1.0, 1.0), 80, 70, 40, 1)]
    assert pareto.never_below(joint, [m(SubnetConfig(0.5, 0.5), 55, 45, 8, 1)])
    assert not pareto.never_below(joint, [m(SubnetConfig(0.5, 0.5), 65, 55, 8, 1)])  # better at 8 ms
    assert not pareto.never_below(joint, [m(SubnetConfig(0.5, 0.5), 10, 5, 1, 1)])  # faster than any joint point
    zero = [m(SubnetConfig(0.25, 0.5), 0.0, 0.0, 5, 1)]
    assert pareto.never_below(zero, zero)  # an F1 of 0 is a score, not a missing one
    points = [(79.5, 20.0), (78.0, 8.0), (60.0, 1.0)]
    assert pareto.speedup_within(points, (80.0, 40.0), 1.0) == 2.0
    assert pareto.speedup_within(points, (80.0, 40.0), 3.0) == 5.0
    assert pareto.speedup_within(points, (90.0, 40.0), 1.0) == 1.0
