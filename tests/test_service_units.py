"""Pure parts of the service, fed by hand: budget headers, planner, controller, batcher."""

import asyncio
import heapq
import math
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from models.nn.subnet import SubnetConfig, grid
from service import budget
from service.batcher import Batcher, WorkItem, batch_time_cap, slack_after
from service.controller import Controller, LoadStats
from service.errors import Expired, InvalidBudget, Overloaded
from service.metrics import Metrics
from service.planner import (
    Candidate,
    Choice,
    Infeasible,
    LatencyModel,
    Pace,
    PlanMargin,
    Planner,
    Point,
    pareto,
    quality_floor,
)
from service.runtime import Job, Runtime
from service.settings import Settings


def parse(headers: dict[str, str]) -> budget.Budget:
    return budget.parse(headers, default_ms=1000, min_ms=1, max_ms=60_000)


def test_budget_header_precedence_and_units() -> None:
    assert parse({}).ms == 1000 and parse({}).source == "default"
    assert parse({"X-Latency-Budget-Ms": "150", "grpc-timeout": "10m"}).ms == 150
    assert parse({"grpc-timeout": "150m"}).ms == 150
    assert parse({"grpc-timeout": "2S", "x-envoy-expected-rq-timeout-ms": "700"}).ms == 700
    waited = parse({"Prefer": "wait=0.3", "grpc-timeout": "1S"})
    assert waited.ms == 300 and waited.preferences_applied == ("wait=0.3",)
    assert parse({"X-Latency-Budget-Ms": "1e308"}).ms == 60_000  # clamped
    assert parse({"X-Latency-Budget-Ms": "0.01"}).ms == 1


def test_strictness() -> None:
    assert not parse({}).strict
    strict = parse({"Prefer": "handling=strict, wait=1"})
    assert strict.strict and strict.preferences_applied == ("handling=strict", "wait=1")
    assert parse({"X-Budget-Policy": "strict"}).strict


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Latency-Budget-Ms": "-5"},
        {"X-Latency-Budget-Ms": "0"},
        {"X-Latency-Budget-Ms": "NaN"},
        {"X-Latency-Budget-Ms": "inf"},
        {"X-Latency-Budget-Ms": "soon"},
        {"grpc-timeout": "150ms"},
        {"Prefer": "wait=never"},
        {"X-Budget-Policy": "maybe"},
    ],
)
def test_invalid_budget_headers(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidBudget):
        parse(headers)


def make_planner() -> Planner:
    """Three candidates whose latency is 10/20/40 ms per 100 tokens at batch 1, with small spread."""
    latency = LatencyModel([100, 400], [1, 4])
    candidates = []
    for _name, (width, depth), per100, f1 in (
        ("big", (1.0, 1.0), 0.040, 80.0),
        ("mid", (0.5, 1.0), 0.020, 75.0),
        ("small", (0.25, 0.5), 0.010, 60.0),
    ):
        subnet = SubnetConfig(width, depth)
        latency.points[subnet.id] = {
            (t, b): Point(per100 * t / 100 * (b * 0.8 if b > 1 else 1), 0.001) for t in (100, 400) for b in (1, 4)
        }
        candidates.append(Candidate(subnet, f1, int(per100 * 1e9)))
    return Planner(candidates, latency, safety_factor=1.0, tail_sigmas=3.0)


def test_planner_picks_the_most_accurate_that_fits() -> None:
    planner = make_planner()
    choice = planner.choose(budget_s=0.2, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(1.0, 1.0)
    choice = planner.choose(budget_s=0.03, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.5, 1.0)
    # the queue wait is spent from the budget
    choice = planner.choose(budget_s=0.2, elapsed_s=0.0, queue_wait_s=0.18, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.25, 0.5)


def test_planner_keeps_queued_work_on_time() -> None:
    """A new item runs before queued work due later (EDF): it may only take their slack."""
    planner = make_planner()
    choice = planner.choose(0.2, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.03)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.5, 1.0)
    # no candidate fits the slack: the fastest, since its own budget allows it
    choice = planner.choose(0.2, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.001)
    assert isinstance(choice, Choice) and choice.candidate.subnet == SubnetConfig(0.25, 0.5)


def test_planner_tells_floor_from_load() -> None:
    planner = make_planner()
    floor = planner.choose(budget_s=0.005, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.reason == "floor" and math.isclose(floor.floor_s, 0.013)
    load = planner.choose(budget_s=0.05, elapsed_s=0.0, queue_wait_s=0.045, tokens=100, windows=1)
    assert isinstance(load, Infeasible) and load.reason == "load"


def test_planner_level_caps_quality_and_interpolates() -> None:
    planner = make_planner()
    capped = planner.choose(budget_s=1.0, elapsed_s=0.0, queue_wait_s=0.0, tokens=100, windows=1, level=1)
    assert isinstance(capped, Choice) and capped.candidate.subnet == SubnetConfig(0.5, 1.0)
    assert math.isclose(planner.latency.predict(SubnetConfig(1.0, 1.0).id, 250, 1).mean_s, 0.1)


def test_online_correction_learns_a_slower_machine() -> None:
    planner = make_planner()
    big = planner.candidates[0]
    before = planner.tail_s(big, 100)
    for _ in range(200):
        planner.observe(big.subnet.id, 100, 1, 0.080)  # twice the calibrated 40 ms
    assert planner.tail_s(big, 100) > 1.9 * before
    assert planner.drift() > 1.9


def test_a_slowdown_of_the_whole_core_slows_every_plan_within_a_few_batches() -> None:
    planner = make_planner()
    big, mid = planner.candidates[0], planner.candidates[1]
    for _ in range(50):  # a settled server: the mid one runs as calibrated
        planner.observe(mid.subnet.id, 100, 1, 0.020)
    before = planner.tail_s(big, 100)
    for _ in range(8):
        planner.observe(mid.subnet.id, 100, 1, 0.040)  # then at half speed: its slow correction lags
    # the big one has not run since, but the core is slow: its tail is planned twice as long
    assert planner.pace.factor > 1.6 and planner.tail_s(big, 100) > 1.6 * before
    assert planner.choose(0.05, 0.0, 0.0, tokens=100, windows=1).candidate.subnet != big.subnet
    for _ in range(8):  # batches run to (corrected) prediction again: the pace is 1 again
        planner.observe(mid.subnet.id, 100, 1, planner.mean_s(mid, 100) / planner.pace.factor)
    assert planner.pace.factor == 1.0
    fast = Pace(window=2)
    fast.observe(0.01, 0.02)  # faster than predicted never lowers a plan below the corrected model
    assert fast.factor == 1.0


def test_plan_overruns_reserve_a_margin_until_plans_hold_again() -> None:
    """Requests that ran past their plan (waits longer than predicted) make later choices faster."""
    planner = make_planner()
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


def test_a_point_below_the_quality_floor_answers_only_what_nothing_else_can() -> None:
    """make_planner's F1s are 80 / 75 / 60: a floor at 0.8 of the best drops `small` to the reserves."""
    base = make_planner()
    planner = Planner([*base.candidates], base.latency, safety_factor=1.0, tail_sigmas=3.0, min_f1_share=0.8)
    big, mid, small = (c.subnet for c in base.candidates)
    assert [c.subnet for c in planner.candidates] == [big, mid] and len(planner.reserves) == 1
    assert planner.reserves[-1].subnet == small and planner.rank(planner.reserves[0]) == 2
    # tails at 100 tokens: mid 23 ms, small 13 ms. Queued work's slack (5 ms) fits neither: mid,
    # the fastest candidate, still ends within the budget, so the reserve is not used
    choice = planner.choose(0.2, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.005)
    assert isinstance(choice, Choice) and choice.candidate.subnet == mid
    # 15 ms left: only the reserve ends in time
    choice = planner.choose(0.2, 0.0, 0.185, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == small
    floor = planner.choose(0.005, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.fastest.subnet == small and math.isclose(floor.floor_s, 0.013)
    assert len(Planner([*base.candidates], base.latency, min_f1_share=0.5).candidates) == 3  # none below 40


def test_the_floor_is_the_quickest_sub_network_for_this_input() -> None:
    """The reserve is the fastest point overall, but its correction (it ran 2.5x slower than
    calibrated) puts its tail at 32.5 ms, above mid's 23 ms: the floor is mid's. A 30 ms budget
    with 10 ms of queue is then a matter of load, not below the floor (the reserve's tail said so)."""
    base = make_planner()
    planner = Planner([*base.candidates], base.latency, safety_factor=1.0, tail_sigmas=3.0, min_f1_share=0.8)
    _, mid, small = (c.subnet for c in base.candidates)
    planner.corrections[small.id].ratio = 2.5
    floor = planner.choose(0.005, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.fastest.subnet == mid and math.isclose(floor.floor_s, 0.023)
    loaded = planner.choose(0.03, 0.0, 0.01, tokens=100, windows=1)
    assert isinstance(loaded, Infeasible) and loaded.reason == "load"


def test_a_candidate_quicker_than_every_last_resort_answers_when_they_cannot() -> None:
    """No quality floor: small (the last candidate) ran 5x slower than calibrated, 65 ms, so mid
    (23 ms) is quickest. With 25 ms left but 5 ms of queued slack, nothing fits the first pass;
    mid still ends in time and answers, where the last candidate alone would have been refused."""
    planner = make_planner()
    _, mid, small = (c.subnet for c in planner.candidates)
    planner.corrections[small.id].ratio = 5.0
    choice = planner.choose(0.025, 0.0, 0.0, tokens=100, windows=1, others_slack_s=0.005)
    assert isinstance(choice, Choice) and choice.candidate.subnet == mid
    floor = planner.choose(0.02, 0.0, 0.0, tokens=100, windows=1)
    assert isinstance(floor, Infeasible) and floor.fastest.subnet == mid and floor.reason == "floor"


def test_the_most_accurate_reserve_that_fits_answers_before_the_fastest() -> None:
    """Two points below the floor: F1 36 at 10 ms and F1 17 at 8 ms per 100 tokens (25% faster, so
    both stay on the front). With 13 ms left the F1-36 one ends in time and answers; with 9 ms left
    only the F1-17 one does."""
    base = make_planner()
    latency = base.latency
    mid36, junk = SubnetConfig(0.25, 0.5, quantized=True), SubnetConfig(0.25, 0.5, (0.6, 0.3, 0.3), True)
    for subnet, per100 in ((mid36, 0.010), (junk, 0.008)):
        latency.points[subnet.id] = {(t, b): Point(per100 * t / 100 * b, 0.0) for t in (100, 400) for b in (1, 4)}
    candidates = [*base.candidates[:2], Candidate(mid36, 36.0, 2), Candidate(junk, 17.0, 1)]
    planner = Planner(candidates, latency, safety_factor=1.0, tail_sigmas=3.0, min_f1_share=0.7)
    assert [c.subnet for c in planner.reserves] == [mid36, junk]
    choice = planner.choose(0.2, 0.0, 0.187, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == mid36
    choice = planner.choose(0.2, 0.0, 0.191, tokens=100, windows=1)
    assert isinstance(choice, Choice) and choice.candidate.subnet == junk
    assert planner.rank(planner.reserves[1]) == 3


def stats(**kw: float) -> LoadStats:
    base = dict(arrivals_per_s=10, busy_fraction=0.3, queue_depth=0, max_queue=64, requests=10, budget_misses=0, shed=0)
    base.update(kw)
    return LoadStats(**base)  # type: ignore[arg-type]


def test_controller_degrades_fast_and_recovers_slowly() -> None:
    controller = Controller(max_level=5, recover_ticks=3)
    assert controller.tick(stats(busy_fraction=0.99, queue_depth=2)) == 0  # busy alone is no pressure
    assert controller.tick(stats(queue_depth=16)) == 1  # a quarter of the queue cap
    assert controller.tick(stats(shed=3, queue_depth=40)) == 3
    assert controller.tick(stats(budget_misses=5)) == 4
    assert [controller.tick(stats()) for _ in range(3)] == [4, 4, 0]  # calm ticks: back to the floor


def test_controller_tolerates_misses_within_the_target_over_its_window() -> None:
    controller = Controller(max_level=5, miss_high=0.01, miss_window=5)
    # one miss among 20 requests a tick: 5% in that tick, but 1% over five ticks
    ticks = [stats(requests=20), stats(requests=20), stats(requests=20), stats(requests=20)]
    assert [controller.tick(t) for t in ticks] == [0, 0, 0, 0]
    assert controller.tick(stats(requests=20, budget_misses=1)) == 0
    assert controller.tick(stats(requests=20, budget_misses=1)) == 1  # 2 in 100: over the target
    assert controller.tick(stats(requests=20)) == 1  # no new miss: the window alone does not push


COSTS = (0.065, 0.05, 0.035, 0.026, 0.021, 0.015)  # seconds per request, most accurate level first


def test_controller_floor_is_the_level_the_arrival_rate_allows_with_the_share_above_it() -> None:
    controller = Controller(max_level=5, target_busy=0.9, rate_window=1)

    def floor(rate: float) -> float:
        return controller.tick(stats(arrivals_per_s=rate, level_costs=COSTS))

    assert floor(13) == 0.0  # 13/s x 65 ms = 0.85 of the model
    # 30/s leaves 30 ms a request: level 3 (26 ms) for all, and 4/9 of them at level 2 (35 ms)
    assert floor(30) == pytest.approx(3 - 4 / 9)
    assert floor(45) == pytest.approx(5 - 5 / 6)  # 20 ms: between 21 and 15 ms
    assert floor(15) == pytest.approx(1 - 2 / 3)  # 60 ms: between 65 and 50 ms
    assert floor(100) == 5.0  # nothing fits: the most degraded level
    assert controller.tick(stats(arrivals_per_s=15, level_costs=())) == 0.0  # no costs yet: no floor


def test_controller_floor_reads_the_arrival_rate_over_its_window() -> None:
    controller = Controller(max_level=5, target_busy=0.9, rate_window=3)
    levels = [controller.tick(stats(arrivals_per_s=rate, level_costs=COSTS)) for rate in (30, 30, 45, 30)]
    # 45/s is within 3 sigma of 30/s in one tick (46.4): averaged, 35/s, 25.7 ms a request, level 4
    # (21 ms) with 94% of the requests at level 3 (26 ms); then 35/s again
    assert levels[:2] == [pytest.approx(3 - 4 / 9)] * 2
    assert levels[2:] == [pytest.approx(4 - (0.9 / 35 - 0.021) / 0.005)] * 2


def test_controller_floor_follows_a_step_up_in_load_within_one_tick() -> None:
    controller = Controller(max_level=5, target_busy=0.9, rate_window=3)
    levels = [controller.tick(stats(arrivals_per_s=rate, level_costs=COSTS)) for rate in (15, 15, 45, 45, 15)]
    # 45/s is far above 15/s (+7.7 sigma): the floor is 45/s's at once, not the mean 25/s
    assert levels[2] == levels[3] == pytest.approx(5 - 5 / 6)
    assert levels[4] == pytest.approx(4 - (0.9 / 35 - 0.021) / 0.005)  # back down: averaged (35/s)


def test_controller_pressure_lifts_the_level_above_the_floor_until_calm() -> None:
    controller = Controller(max_level=5, recover_ticks=3, rate_window=1)
    load = {"arrivals_per_s": 30, "level_costs": COSTS}
    base = controller.tick(stats(**load))
    assert controller.tick(stats(budget_misses=3, **load)) == pytest.approx(base + 1)
    assert [controller.tick(stats(**load)) for _ in range(3)] == pytest.approx([base + 1, base + 1, base])


def test_a_fractional_level_spreads_its_two_caps_over_requests() -> None:
    runtime = Runtime(Settings())
    runtime.level = 2.25  # a quarter at cap 3, three quarters at cap 2
    caps = [runtime._cap() for _ in range(100)]
    assert caps.count(2) == 75 and caps.count(3) == 25 and caps[:4] == [3, 2, 2, 2]
    runtime.level = 4.0
    assert {runtime._cap() for _ in range(10)} == {4}


def item(deadline: float, subnet: SubnetConfig, payload: str, drop_after: float | None = None) -> WorkItem:
    drop = drop_after if drop_after is not None else deadline + 10
    return WorkItem(deadline, 0, deadline, subnet, 1, 100, drop, 0.01, payload)


def test_batcher_is_edf_batches_by_subnet_and_drops_expired() -> None:
    big, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)
    batches: list[list[str]] = []

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[str]:
        batches.append([i.payload for i in items])
        time.sleep(0.02)
        return [f"{i.payload}:{subnet.id}" for i in items]

    async def scenario() -> tuple[list, list]:  # type: ignore[type-arg]
        batcher = Batcher(run, max_queue=10, max_batch_windows=8)
        batcher.start()
        now = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(item(now + 5, big, "warm")))
        await asyncio.sleep(0.005)  # the model is now busy with "warm"; the rest queue up
        tasks = [
            asyncio.ensure_future(batcher.submit(item(now + 3, big, "late-big"))),
            asyncio.ensure_future(batcher.submit(item(now + 1, small, "early-small"))),
            asyncio.ensure_future(batcher.submit(item(now + 2, small, "mid-small"))),
            asyncio.ensure_future(batcher.submit(item(now + 0.5, big, "expired", drop_after=now))),
        ]
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        await batcher.stop()
        return results, batches

    results, order = asyncio.run(scenario())
    assert order == [["warm"], ["early-small", "mid-small"], ["late-big"]]
    assert isinstance(results[4], Expired)
    assert results[2] == "early-small:w25d50"


def test_a_companion_joins_a_batch_only_if_no_item_it_overtakes_becomes_late() -> None:
    big, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)

    def order(companion_s: float) -> list[list[str]]:
        batches: list[list[str]] = []

        def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[None]:
            batches.append([i.payload for i in items])
            time.sleep(0.05 if items[0].payload == "warm" else 0.0)
            return [None for _ in items]

        async def scenario() -> None:
            batcher = Batcher(run, max_queue=10, max_batch_windows=8)
            batcher.start()
            now = time.perf_counter()
            first = asyncio.ensure_future(batcher.submit(item(now + 5, big, "warm")))
            await asyncio.sleep(0.005)  # the model is busy with "warm" for 50 ms
            rest = [
                replace(item(now + 0.2, big, "A"), predicted_s=0.05),
                replace(item(now + 0.25, small, "B"), predicted_s=0.05),
                replace(item(now + 2.0, big, "C"), predicted_s=companion_s),
            ]
            await asyncio.gather(first, *(batcher.submit(i) for i in rest))
            await batcher.stop()

        asyncio.run(scenario())
        return batches

    # C batched with A would push B (due 250 ms, on time by prediction) past its deadline: C waits.
    assert order(companion_s=0.2) == [["warm"], ["A"], ["B"], ["C"]]
    # A short companion leaves B on time: batched as before.
    assert order(companion_s=0.01) == [["warm"], ["A", "C"], ["B"]]


def test_batches_stop_growing_at_half_the_tight_budgets() -> None:
    assert batch_time_cap([]) == math.inf
    budgets = [0.134] * 10 + [0.334] * 190  # 5% of the budgets are 134 ms
    assert math.isclose(batch_time_cap(budgets), 0.067)

    batches: list[list[str]] = []

    async def scenario() -> None:
        batcher = Batcher(lambda s, items: batches.append([i.payload for i in items]) or [None] * len(items), 10, 8)
        batcher.max_batch_s = 0.025
        queued = [batcher.submit(item(time.perf_counter() + 5 + i, SubnetConfig(), str(i))) for i in range(5)]
        batcher.start()  # five 10 ms items of one sub-network queued before the loop runs
        await asyncio.gather(*queued)
        await batcher.stop()

    asyncio.run(scenario())
    assert batches == [["0", "1"], ["2", "3"], ["4"]]  # a third 10 ms item would pass 25 ms


def test_only_an_item_that_was_on_time_counts_as_made_late() -> None:
    waiting = [item(1.0, SubnetConfig(), "x"), item(0.5, SubnetConfig(), "late anyway")]  # 10 ms each
    assert math.isclose(slack_after(0.95, waiting[:1]), 0.04)  # x ends at 0.96: 50 ms more would end at 1.01
    assert math.isclose(slack_after(0.90, waiting[:1]), 0.09)
    assert slack_after(0.95, waiting[1:]) == math.inf  # due 0.5: late with or without more ahead of it
    assert math.isclose(slack_after(0.95, waiting), 0.04)


def test_the_head_is_replanned_with_the_slack_of_the_work_behind_it() -> None:
    """Frozen clock at t=100 s; the replanned head takes a companion of its new sub-network."""
    big, small = SubnetConfig(1.0, 1.0), SubnetConfig(0.25, 0.5)
    asked: list[tuple[str, float]] = []
    batches: list[tuple[str, list[str]]] = []

    def replan(head: WorkItem, now: float, extra_s: float) -> tuple[SubnetConfig, float] | None:
        asked.append((head.payload, round(extra_s, 6)))
        return (big, 0.02) if head.payload == "h" else None

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[None]:
        batches.append((subnet.id, [i.payload for i in items]))
        return [None for _ in items]

    async def scenario() -> None:
        batcher = Batcher(run, max_queue=10, max_batch_windows=8, replan=replan, clock=lambda: 100.0)
        queued = [batcher.submit(item(100.03, small, "h")), batcher.submit(item(100.05, big, "w"))]
        batcher.start()
        await asyncio.gather(*queued)
        await batcher.stop()

    asyncio.run(scenario())
    # h planned to end at 100.01, w at 100.02 of its 100.05: h may run 30 ms longer than planned
    assert asked == [("h", 0.03)]
    assert batches == [("w100d100", ["h", "w"])]


def replan_runtime() -> tuple[Runtime, Planner]:
    runtime, planner = Runtime(Settings()), make_planner()
    runtime.planner, runtime.metrics = planner, Metrics([100.0], [])
    runtime._by_subnet = {c.subnet: c for c in planner.candidates}
    return runtime, planner


def planned(subnet: SubnetConfig, predicted_s: float, left_s: float, cap: int = 0) -> WorkItem:
    job = Job(None, None, cap, None)  # type: ignore[arg-type]  # the re-plan reads only the cap
    return WorkItem(100.0 + left_s, 0, 100.0 + left_s, subnet, 1, 100, 101.0, predicted_s, job)


def test_replanning_takes_the_time_the_queue_left_within_cap_and_slack() -> None:
    """Tails at 100 tokens: big 43 ms, mid 23 ms, small 13 ms (make_planner)."""
    runtime, planner = replan_runtime()
    big, mid, small = (c.subnet for c in planner.candidates)
    up = runtime._replan(planned(small, 0.013, left_s=0.2), 100.0, extra_s=0.05)
    assert up is not None and up[0] == big and math.isclose(up[1], 0.043)
    assert runtime._replan(planned(small, 0.013, 0.2), 100.0, extra_s=0.015)[0] == mid  # type: ignore[index]
    assert runtime._replan(planned(small, 0.013, 0.2, cap=1), 100.0, extra_s=1.0)[0] == mid  # type: ignore[index]
    assert runtime._replan(planned(small, 0.013, 0.03), 100.0, extra_s=1.0)[0] == mid  # type: ignore[index]
    assert runtime._replan(planned(big, 0.043, 0.2), 100.0, extra_s=0.0) is None  # already the best
    replans = runtime.metrics.replans  # type: ignore[union-attr]
    assert replans.labels("up")._value.get() == 4 and replans.labels("down")._value.get() == 0


def test_replanning_makes_a_plan_less_accurate_only_when_it_would_end_late() -> None:
    runtime, planner = replan_runtime()
    big, mid, _small = (c.subnet for c in planner.candidates)
    down = runtime._replan(planned(big, 0.043, left_s=0.03), 100.0, extra_s=1.0)
    assert down is not None and down[0] == mid
    planner.margin.margin_s = 0.01  # big no longer fits the budget less the margin, but still ends in time
    assert runtime._replan(planned(big, 0.043, left_s=0.045), 100.0, extra_s=1.0) is None
    assert runtime.metrics.replans.labels("down")._value.get() == 1  # type: ignore[union-attr]


def test_batcher_slack_is_what_work_due_later_can_spare() -> None:
    """Queued (never started) items of 10 ms each, at a frozen clock of t=100 s."""

    async def scenario() -> None:
        batcher = Batcher(lambda s, items: [1 for _ in items], max_queue=10, max_batch_windows=1, clock=lambda: 100.0)
        queued = [
            asyncio.ensure_future(batcher.submit(item(deadline, SubnetConfig(), str(deadline))))
            for deadline in (100.005, 100.025, 100.05)  # EDF finishes: 100.01 (late already), 100.02, 100.03
        ]
        await asyncio.sleep(0)
        assert math.isclose(batcher.slack_s(100.0), 0.005)  # the late item constrains nothing
        assert math.isclose(batcher.slack_s(100.03), 0.02)  # only the last one runs after it
        assert batcher.slack_s(100.1) == math.inf
        await batcher.stop()
        assert all(isinstance(r, Overloaded) for r in await asyncio.gather(*queued, return_exceptions=True))

    asyncio.run(scenario())


def test_batcher_refuses_fast_when_full() -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda s, items: [time.sleep(0.05) or 1 for _ in items], max_queue=2, max_batch_windows=1)
        batcher.start()
        now = time.perf_counter()
        tasks = [asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "running")))]
        await asyncio.sleep(0.01)  # now computing; two more fill the queue
        tasks += [asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), str(i)))) for i in range(2)]
        await asyncio.sleep(0.001)
        began = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(item(now + 5, SubnetConfig(), "x"))
        assert time.perf_counter() - began < 0.01 and refused.value.retry_after_s
        assert await asyncio.gather(*tasks) == [1, 1, 1]
        await batcher.stop()

    asyncio.run(scenario())


def test_admitted_requests_hold_their_queue_place_until_queued() -> None:
    """The gate counts requests it let in (body still being read) against the queue cap, so a
    request it admitted is never refused for a full queue later, and the cap is never exceeded."""
    runtime = Runtime(Settings(max_queue=2))
    runtime.ready = True

    async def scenario() -> None:
        runtime.batcher = Batcher(lambda s, items: [1 for _ in items], max_queue=2, max_batch_windows=1)
        first, second = runtime.admit(), runtime.admit()
        assert isinstance(runtime.admission_error(), Overloaded)  # both places taken, nothing queued yet
        assert runtime.admission_error(holding_place=True) is None  # the admitted ones go on
        second()
        second()  # a release is idempotent: the gate's finally may run after the queue took the place
        assert runtime.admitted == 1 and runtime.admission_error() is None
        waiting = item(time.perf_counter() + 5, SubnetConfig(), "a")
        queued = asyncio.ensure_future(runtime.batcher.submit(waiting, on_queued=first))
        await asyncio.sleep(0)  # the batcher is not started: the item stays queued
        assert (runtime.admitted, runtime.batcher.depth) == (0, 1)
        first()
        assert runtime.admitted == 0
        third = runtime.admit()
        assert isinstance(runtime.admission_error(), Overloaded)  # one queued + one admitted = the cap
        third()
        queued.cancel()
        await runtime.batcher.stop()

    asyncio.run(scenario())


def test_the_model_thread_yields_the_cpu_to_the_event_loop() -> None:
    def niceness(subnet: SubnetConfig, items: list[WorkItem]) -> list[int]:
        return [os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) for _ in items]

    async def scenario() -> int:
        batcher = Batcher(niceness, max_queue=2, max_batch_windows=1, model_nice=5)
        batcher.start()
        result = await batcher.submit(item(time.perf_counter() + 5, SubnetConfig(), "a"))
        await batcher.stop()
        return result  # type: ignore[no-any-return]

    assert asyncio.run(scenario()) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)


def test_a_cancelled_request_is_never_computed() -> None:
    computed: list[str] = []

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[str]:
        computed.extend(i.payload for i in items)
        time.sleep(0.03)
        return [i.payload for i in items]

    async def scenario() -> None:
        batcher = Batcher(run, max_queue=10, max_batch_windows=1)
        batcher.start()
        now = time.perf_counter()
        busy = asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "busy")))
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "gone")))
        await asyncio.sleep(0.001)
        gone.cancel()  # the client disconnected
        await busy
        await asyncio.sleep(0.05)
        await batcher.stop()

    asyncio.run(scenario())
    assert computed == ["busy"]


def test_late_lenient_work_yields_to_work_that_can_still_make_it() -> None:
    order: list[str] = []

    def run(subnet: SubnetConfig, items: list[WorkItem]) -> list[str]:
        order.extend(i.payload for i in items)
        time.sleep(0.02)
        return [i.payload for i in items]

    async def scenario() -> None:
        batcher = Batcher(run, max_queue=10, max_batch_windows=1)
        batcher.start()
        now = time.perf_counter()
        busy = asyncio.ensure_future(batcher.submit(item(now + 5, SubnetConfig(), "busy")))
        await asyncio.sleep(0.005)
        late = asyncio.ensure_future(batcher.submit(item(now - 0.1, SubnetConfig(), "late", drop_after=now + 5)))
        on_time = asyncio.ensure_future(batcher.submit(item(now + 1, SubnetConfig(), "on-time")))
        await asyncio.gather(busy, late, on_time)
        await batcher.stop()

    asyncio.run(scenario())
    assert order == ["busy", "on-time", "late"]


def test_queue_wait_counts_only_work_served_first() -> None:
    async def scenario() -> tuple[float, float]:
        batcher = Batcher(lambda s, items: [None for _ in items], max_queue=10, max_batch_windows=1)
        now = time.perf_counter()
        for deadline in (1, 2, 3):  # queued, not started (no loop task): predicted 0.01 s each
            await_item = item(now + deadline, SubnetConfig(), "x")
            await_item.future = asyncio.get_running_loop().create_future()
            batcher._heap.append(await_item)
        return batcher.queue_wait_s(now + 1.5), batcher.queue_wait_s()

    early, everything = asyncio.run(scenario())
    assert math.isclose(early, 0.01) and math.isclose(everything, 0.03)


def test_an_item_queued_behind_is_served_last_but_judged_by_its_own_deadline() -> None:
    async def scenario() -> tuple[float, float, float, list[str]]:
        order: list[str] = []
        batcher = Batcher(lambda s, items: [order.append(i.payload) for i in items], max_queue=10, max_batch_windows=1)
        now = time.perf_counter()
        loop = asyncio.get_running_loop()
        for name, deadline in (("a", 1.0), ("b", 3.0)):
            queued = item(now + deadline, SubnetConfig(), name)
            queued.future = loop.create_future()
            heapq.heappush(batcher._heap, queued)
        # due at +2 s but queued behind b (due at +3 s): served after both, still due at +2 s
        behind = item(now + 2.0, SubnetConfig(), "behind")
        behind.rank, behind.future = math.nextafter(batcher.last_rank(), math.inf), loop.create_future()
        heapq.heappush(batcher._heap, behind)
        # a newcomer due at +1.5 s overtakes b and `behind`: behind's own deadline (+2 s, finish
        # +0.03 s) bounds its slack, not its rank
        slack = batcher.slack_s(now + 1.5) - (now + 2.0 - time.perf_counter())
        wait_at_rank, last = batcher.queue_wait_s(now + 1.5), batcher.last_rank()
        batcher.start()
        await asyncio.sleep(0.1)
        await batcher.stop()
        return slack, wait_at_rank, last - (now + 3.0), order

    slack_error, wait_at_rank, last_offset, order = asyncio.run(scenario())
    assert order == ["a", "b", "behind"]
    assert -0.04 < slack_error < 0  # 2 s less the 0.03 s of work ahead (rank would give ~3 s)
    assert math.isclose(wait_at_rank, 0.01) and 0 < last_offset < 1e-6


def test_admission_reports_when_the_last_byte_of_a_response_was_sent() -> None:
    """`on_sent` gets a time after the transport took the final body message, not before."""
    from service.middleware import Admission

    transport_done: list[float] = []
    reported: list[float] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        scope["state"]["on_sent"] = reported.append
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        assert not reported  # not yet: more body follows
        await send({"type": "http.response.body", "body": b""})

    async def send(message):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)  # a slow transport
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            transport_done.append(time.perf_counter())

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"", "more_body": False}

    gate = Admission(app, "/v1/qa", lambda: None, lambda: lambda: None, lambda outcome, s: None)
    scope = {"type": "http", "method": "POST", "path": "/v1/qa", "headers": []}
    asyncio.run(gate(scope, receive, send))
    assert len(reported) == 1 and reported[0] >= transport_done[0]


def test_the_network_allowance_must_leave_the_default_budget_something() -> None:
    with pytest.raises(ValueError, match="network_ms"):
        Settings(network_ms=1000, default_budget_ms=1000)


@pytest.mark.parametrize("mode", ["off", "on", "off with a float front"])
def test_int8_off_serves_a_float_front(
    mode: str, tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a CPU whose integer matmul is slow (`int8=auto` finds out) the service serves the
    float-only front (`pareto_float`) or else the float width x depth grid, and never builds the
    INT8 weights; `on` serves the profile as shipped."""
    from models.infer import checkpoint

    root = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, root)
    profile = [SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0, quantized=True), SubnetConfig(0.5, 0.5)]
    floats = [SubnetConfig(1.0, 1.0), SubnetConfig(0.75, 1.0), SubnetConfig(0.25, 0.5)]
    checkpoint.write_profile(root, [checkpoint.ProfileEntry(s, 50.0 - i, 40.0, 1000) for i, s in enumerate(profile)])
    if mode == "off with a float front":
        entries = [checkpoint.ProfileEntry(s, 49.0 - i, 40.0, 1000) for i, s in enumerate(floats)]
        checkpoint.write_profile(root, entries, None)
    runtime = Runtime(Settings(checkpoint=root, int8=mode.split()[0]))
    with caplog.at_level("INFO", logger="service.runtime"):
        runtime.load()
    served = [c.subnet for c in runtime._candidates]
    expected = {"on": profile, "off": grid(), "off with a float front": floats}[mode]
    assert served == expected
    assert ("int8 off" in caplog.text) == (mode != "on")
    assert ('"event": "int8 on"' in caplog.text) == (mode == "on")
    front = {"on": "pareto", "off": "width x depth grid", "off with a float front": "pareto_float"}[mode]
    assert f'"front": "{front}"' in caplog.text
    assert ('"dropped": ["w50d100-q8"]' in caplog.text) == (mode != "on")
    assert runtime.reader is not None
    assert len(runtime.reader.checkpoint.fronts["pareto"]) == 3  # writing one front kept the other
    packed = runtime.reader.checkpoint.model._packed or {}
    assert any(quantized for _, quantized in packed) == (mode == "on")
