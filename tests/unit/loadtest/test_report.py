"""The load-test report: burst checks on a hand-made level timeline; the same-question F1 reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import phases, reference, report, scenarios
from models.data import squad
from tests.conftest import DATA


def test_burst_checks_read_the_level_timeline() -> None:
    # 1x until t=10 (settled around level 2), 3x until t=20, then 1x again
    levels = [(1.0, 0), (5.0, 1.5), (9.0, 2.5), (10.2, 2.8), (10.4, 3), (12.0, 6), (21.0, 6), (24.0, 2), (27.0, 0)]
    levels.append((29.0, 0.4))
    phases = [{"start_s": 0.0}, {"start_s": 10.0}, {"start_s": 20.0}]
    checks = report._checks({}, {"adaptive": {"burst": {"phases": phases, "levels": levels}}}, {})
    assert checks["burst_level_rose_after_s"] == 0.4
    assert checks["burst_level_before_step_up"] == 2
    assert checks["burst_back_to_that_level_after_s"] == 4.0
    assert checks["burst_full_quality_after_step_down_s"] == 7.0
    assert checks["burst_relapsed_after_recovery"] is True


def test_served_f1_is_judged_against_the_full_model_on_the_questions_it_answered(tiny_checkpoint: Path) -> None:
    a, b, c = squad.load_squad(DATA / "eval.json.gz", limit=3)
    sweep = {
        "2.0": [{"qid": a.qid, "status": 200}, {"qid": b.qid, "status": 200}, {"qid": c.qid, "status": 503}],
        "3.0": [{"qid": c.qid, "status": 503}],
    }
    results = {"servers": {"adaptive": {"sweep": sweep}}}
    ref = reference.add(results, tiny_checkpoint, [a, b, c])
    assert results["reference_f1"] is ref and ref["3.0"] is None  # nothing answered: no reference
    one = {q.qid: reference.full_model_f1(tiny_checkpoint, [a, b, c], [q.qid]) for q in (a, b)}
    # the refused question is left out (each term is rounded to 0.01 on its own)
    assert ref["2.0"] == pytest.approx((one[a.qid] + one[b.qid]) / 2, abs=0.011)
    summary = {"adaptive": {"sweep": {"2.0": {"attainment": 1.0, "served_f1": 50.0}}}}
    checks = report._checks(summary, {}, {"2.0": 56.5})
    assert checks["full_model_f1_on_the_same_questions_at_2x"] == 56.5
    assert checks["adaptive_f1_below_full_model_at_2x"] == 6.5


def test_a_static_server_that_met_almost_no_budget_is_not_offered_more_load(tmp_path: Path) -> None:
    missed = [{"met": False}] * 96 + [{"met": True}] * 4  # 4% met
    assert scenarios.gave_up("peer", missed) and scenarios.gave_up("pinned-full", missed)
    assert not scenarios.gave_up("adaptive", missed)  # the adaptive server is always offered every load
    assert not scenarios.gave_up("peer", [{"met": True}] * 5 + [{"met": False}] * 95)  # 5%: offered
    assert not scenarios.gave_up("peer", [])


def test_a_phase_report_counts_the_mix_per_budget_and_lists_what_missed() -> None:
    rows = [
        {"sent_at": 0.1, "latency_s": 0.05, "budget_ms": 110.2, "status": 200, "met": True, "f1": 100.0, "subnet": "a"},
        {"sent_at": 0.2, "latency_s": 0.12, "budget_ms": 110.2, "status": 200, "met": False, "f1": 50.0, "subnet": "b"},
        {
            "sent_at": 0.3,
            "latency_s": 0.01,
            "budget_ms": 275.0,
            "status": 503,
            "met": False,
            "f1": None,
            "subnet": None,
        },
    ]
    out = phases.phase_report(2.0, rows)
    assert out["sent"] == 3 and out["attainment"] == pytest.approx(1 / 3, abs=1e-4) and out["served_f1"] == 75.0
    assert out["mix_by_budget_ms"] == {110: {"a": 1, "b": 1}, 275: {None: 1}}
    assert [m["at_s"] for m in out["missed"]] == [0.2, 0.3] and out["missed"][0]["ms"] == 120.0
