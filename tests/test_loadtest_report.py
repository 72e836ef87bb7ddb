"""The load-test report's burst checks, on a hand-made level timeline."""

from __future__ import annotations

from loadtest import report


def test_burst_checks_read_the_level_timeline() -> None:
    # 1x until t=10 (settled at level 2), 3x until t=20, then 1x again
    levels = [(1.0, 0), (5.0, 2), (9.0, 2), (10.4, 3), (12.0, 6), (21.0, 6), (24.0, 2), (27.0, 0), (29.0, 1)]
    phases = [{"start_s": 0.0}, {"start_s": 10.0}, {"start_s": 20.0}]
    checks = report._checks({}, {"adaptive": {"burst": {"phases": phases, "levels": levels}}})
    assert checks["burst_level_rose_after_s"] == 0.4
    assert checks["burst_level_before_step_up"] == 2
    assert checks["burst_back_to_that_level_after_s"] == 4.0
    assert checks["burst_full_quality_after_step_down_s"] == 7.0
    assert checks["burst_relapsed_after_recovery"] is True
