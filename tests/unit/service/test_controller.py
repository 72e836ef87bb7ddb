"""The load controller: the degradation level it sets from load statistics, tick by tick."""

import pytest

from service.controller import Controller, LoadStats


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
