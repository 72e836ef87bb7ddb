"""Online correction: the planner learns a machine slower than its calibration."""

from service.planner import Pace, Planner


def test_online_correction_learns_a_slower_machine(planner: Planner) -> None:
    big = planner.candidates[0]
    before = planner.tail_s(big, 100)
    for _ in range(200):
        planner.observe(big.subnet.id, 100, 1, 0.080)  # twice the calibrated 40 ms
    assert planner.tail_s(big, 100) > 1.9 * before
    assert planner.drift() > 1.9


def test_a_slowdown_of_the_whole_core_slows_every_plan_within_a_few_batches(planner: Planner) -> None:
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
