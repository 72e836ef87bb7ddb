"""The report: whole-split rescoring of the subset's front and the pool it widens to, kept in the study."""

import dataclasses

import optuna
import pytest

from models.data import squad
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.search import pareto
from models.search import report as search_report
from models.search import study as search
from tests.unit.search.conftest import EVAL, TinyBench


def test_the_full_model_is_rescored_even_when_the_subset_ranks_it_late() -> None:
    m = pareto.Measurement
    full, w75, w50 = SubnetConfig(1.0, 1.0), SubnetConfig(0.75, 1.0), SubnetConfig(0.5, 1.0)
    # on the subset width 0.75 beats the full model on both counts: the full model is rank 2
    trials = [m(full, 57.0, 0, 40.0, 3), m(w75, 57.5, 0, 30.0, 2), m(w50, 54.0, 0, 20.0, 1)]
    whole_split = {full: (68.9, 57.3), w75: (68.5, 56.5), w50: (64.6, 52.7)}
    timed = {full: 40.0, w75: 30.0, w50: 20.0}
    entries, _ = search_report.rescore(whole_split.__getitem__, lambda s: {x: timed[x] for x in s}, trials, minimum=2)
    assert [e.subnet for e in entries] == [w50, w75, full]  # the whole split puts it back on the front
    assert [e.f1 for e in entries] == [64.6, 68.5, 68.9]


def test_the_shipped_front_is_judged_on_side_by_side_times() -> None:
    """The study timed w75-q8 slow and w50 fast, once each; timed again side by side, w50 is
    slower than w75-q8 and less accurate: it does not ship, and the pool widens to the next rank."""
    m = pareto.Measurement
    full, w75q, w50, w25 = (
        SubnetConfig(1.0, 1.0),
        SubnetConfig(0.75, 1.0, quantized=True),
        SubnetConfig(0.5, 1.0),
        SubnetConfig(0.25, 1.0),
    )
    trials = [m(full, 57.0, 0, 40.0, 4), m(w75q, 56.0, 0, 30.0, 3), m(w50, 54.0, 0, 20.0, 2), m(w25, 40.0, 0, 25.0, 1)]
    whole_split = {full: (68.9, 57.3), w75q: (68.4, 56.4), w50: (64.6, 52.7), w25: (54.5, 40.5)}
    timed = {full: 40.0, w75q: 17.0, w50: 23.0, w25: 12.0}
    calls: list[list[SubnetConfig]] = []

    def retime(subnets: list[SubnetConfig]) -> dict[SubnetConfig, float]:
        calls.append(subnets)
        return {s: timed[s] for s in subnets}

    entries, latency = search_report.rescore(whole_split.__getitem__, retime, trials, minimum=3)
    assert [e.subnet for e in entries] == [w25, w75q, full]
    assert [e.latency_ms for e in entries] == [12.0, 17.0, 40.0] and latency[full] == 40.0
    assert len(calls) == 2 and set(calls[-1]) == {full, w75q, w50, w25}  # widened once, everything re-timed
    calls.clear()
    entries, _ = search_report.rescore(whole_split.__getitem__, retime, trials, minimum=3, max_passes=1)
    assert len(calls) == 1 and [e.subnet for e in entries] == [w75q, full]  # one pass: ships short


def test_later_ranks_join_the_pool_only_within_reach() -> None:
    """A later-rank point that a cheaper, faster pool point out-scores by REACH_F1 subset F1 is never
    scored on the whole split; one just behind is (the whole split may reorder the two), and is
    timed again only if the whole split does not confirm it is outclassed."""
    m = pareto.Measurement
    full, w50, near, far = (
        SubnetConfig(1.0, 1.0),
        SubnetConfig(0.5, 1.0),
        SubnetConfig(0.75, 0.75),
        SubnetConfig(1.0, 0.5),
    )
    trials = [m(full, 57.0, 0, 40.0, 4), m(w50, 54.0, 0, 20.0, 2), m(near, 53.5, 0, 25.0, 3), m(far, 47.0, 0, 30.0, 3)]
    assert [len(r) for r in pareto.pareto_ranks(trials)] == [2, 1, 1]
    whole_split = {full: (68.9, 57.3), w50: (64.6, 52.7), near: (64.0, 52.0), far: (66.0, 54.0)}
    scored: list[SubnetConfig] = []

    def score(subnet: SubnetConfig) -> tuple[float, float]:
        scored.append(subnet)
        return whole_split[subnet]

    timed = {t.subnet: t.latency_ms for t in trials}
    entries, latency = search_report.rescore(score, lambda s: {x: timed[x] for x in s}, trials, minimum=4)
    assert sorted(scored, key=lambda s: s.id) == sorted([full, w50, near], key=lambda s: s.id)
    assert [e.subnet for e in entries] == [w50, full]
    assert set(latency) == {full, w50}  # near: cheaper, faster w50 scored higher on the whole split too
    assert search_report.outclassed(trials[3], trials[:3], 3.0)
    assert not search_report.outclassed(trials[3], [m(w50, 54.0, 0, 20.0, 5)], 3.0)  # more MACs: timing may lie
    assert not search_report.outclassed(trials[3], [m(w50, 54.0, 0, 20.0, 3)], 3.0)  # equal MACs: so may it
    int8_far = m(dataclasses.replace(far, quantized=True), 50.0, 0, 30.0, 3)
    assert not search_report.outclassed(int8_far, [trials[1]], 3.0)  # INT8 is faster per MAC than float


def test_whole_split_scores_are_kept_in_the_study(
    tiny_bench: TinyBench, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report stopped part-way resumes: what was scored on the whole split is in the storage."""
    bench = tiny_bench(2)
    reader, examples = bench.reader, squad.load_squad(EVAL, limit=3)
    study = search.run_study(bench, 2, storage, seed=5, name="r", progress=False, int8=False)
    trials = search.measurements(study)
    scored: list[SubnetConfig] = []
    real = search_report.full_split_scores

    def counted(reader: Reader, examples: list[squad.SquadExample], subnet: SubnetConfig) -> tuple[float, float]:
        scored.append(subnet)
        return real(reader, examples, subnet)

    monkeypatch.setattr(search_report, "full_split_scores", counted)
    scores = search.StudyScores(study, examples)
    first, entries, _ = search_report.build(reader, bench, examples, trials, {"subset": 2}, False, scores)
    stored = search.StudyScores(optuna.load_study(study_name="r", storage=storage), examples)
    assert scored and sorted(stored, key=str) == sorted(scored, key=str) and SubnetConfig(1.0, 1.0) in stored
    assert round(stored[SubnetConfig(1.0, 1.0)][0], 3) == first["full_model"]["f1"]
    assert not search.StudyScores(study, examples[:2])  # other questions: nothing known
    assert not search.StudyScores(study, examples, compiled=True)  # compiled steps: scored afresh

    def rescoring(*_: object) -> tuple[float, float]:
        raise AssertionError("re-scored a configuration the study already holds")

    monkeypatch.setattr(search_report, "full_split_scores", rescoring)
    again, resumed, _ = search_report.build(reader, bench, examples, trials, {"subset": 2}, False, stored)
    assert again["full_model"]["f1"] == first["full_model"]["f1"]
    assert resumed and all(e.f1 == round(stored[e.subnet][0], 3) for e in resumed)
