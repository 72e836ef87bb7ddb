"""Which candidates the planner keeps: the front, the quality floor, and how accuracy lost is counted."""

from models.nn.subnet import SubnetConfig
from service.planner import Candidate, LatencyModel, Planner, Point, pareto, quality_floor


def test_pareto_drops_dominated_candidates() -> None:
    latency = LatencyModel([256], [1])
    fast_good, slow_bad = SubnetConfig(0.5, 1.0), SubnetConfig(1.0, 0.5)
    latency.points = {fast_good.id: {(256, 1): Point(0.01, 0)}, slow_bad.id: {(256, 1): Point(0.02, 0)}}
    planner = Planner([Candidate(fast_good, 80.0, 1), Candidate(slow_bad, 70.0, 2)], latency)
    assert [c.subnet for c in planner.candidates] == [fast_good]


def test_pareto_drops_candidates_barely_faster_than_a_more_accurate_one() -> None:
    latency = LatencyModel([128, 256], [1])
    good, small, junk = SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 1.0), SubnetConfig(0.25, 0.5)
    latency.points = {
        good.id: {(128, 1): Point(0.020, 0), (256, 1): Point(0.040, 0)},
        small.id: {(128, 1): Point(0.012, 0), (256, 1): Point(0.024, 0)},  # 40% faster: kept
        # twice as fast as `small` at 128 tokens, slower at 256: 6% faster over both, inside the noise
        junk.id: {(128, 1): Point(0.006, 0), (256, 1): Point(0.028, 0)},
    }
    candidates = [Candidate(good, 60.0, 3), Candidate(junk, 16.0, 1), Candidate(small, 50.0, 2)]
    assert [c.subnet for c in pareto(candidates, latency)] == [good, small]
    assert [c.subnet for c in pareto(candidates, latency, min_speedup=1.0)] == [good, small, junk]


def test_accuracy_lost_is_expected_f1_or_candidate_steps() -> None:
    latency = LatencyModel([256], [1])
    big, mid, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 0.5)
    latency.points = {s.id: {(256, 1): Point(t, 0)} for s, t in ((big, 0.04), (mid, 0.02), (small, 0.01))}
    scored = Planner([Candidate(big, 70.0, 3), Candidate(mid, 64.0, 2), Candidate(small, 35.0, 1)], latency)
    assert scored.accuracy_lost(scored.candidates[0], scored.candidates[2]) == 35.0
    unscored = Planner([Candidate(big, None, 3), Candidate(mid, None, 2), Candidate(small, None, 1)], latency)
    assert unscored.accuracy_lost(unscored.candidates[0], unscored.candidates[2]) == 5.0


def test_quality_floor_drops_candidates_far_below_the_best() -> None:
    best, mid, junk, unscored = (
        SubnetConfig(1.0, 1.0),
        SubnetConfig(0.25, 0.5),
        SubnetConfig(0.25, 0.75),
        SubnetConfig(),
    )
    candidates = [Candidate(best, 68.9, 3), Candidate(mid, 35.5, 2), Candidate(junk, 16.4, 1)]
    assert [c.subnet for c in quality_floor(candidates, 0.5)] == [best, mid]
    assert len(quality_floor(candidates, 0.0)) == 3
    assert quality_floor([Candidate(unscored, None, 1)], 0.5) == [Candidate(unscored, None, 1)]
