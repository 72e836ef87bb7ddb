"""The frontier search: monotone sampling, Pareto filtering, a resumable seeded study."""

import dataclasses
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from models.data import squad
from models.errors import InvalidInput, InvalidSubnet
from models.infer import checkpoint
from models.infer.reader import Reader
from models.nn import cost
from models.nn.subnet import SubnetConfig
from models.search import pareto, space, timing
from models.search import report as search_report
from models.search import study as search
from tests.conftest import DATA


def test_sampled_lengths_are_non_increasing_and_fit_the_depth() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        subnet = space.subnet_from_trial(trial, 6)
        subnet.check_layers(6)
        if subnet.lengths:
            assert all(a >= b for a, b in zip(subnet.lengths, subnet.lengths[1:]))
        study.tell(trial, [0.0, 0.0])


def test_pareto_front_keeps_only_non_dominated() -> None:
    m = pareto.Measurement
    a, b, c = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 0.5)
    front = pareto.pareto_front([m(a, 80, 70, 50, 1), m(b, 70, 60, 60, 1), m(c, 60, 50, 10, 1)])
    assert [x.subnet for x in front] == [c, a]
    twice = pareto.pareto_front([m(a, 80, 70, 50, 1), m(a, 80, 70, 45, 1), m(c, 60, 50, 10, 1)])
    assert [(x.subnet, x.latency_ms) for x in twice] == [(c, 10), (a, 45)]  # measured twice: the fastest


def searched(study) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The study's trials the sampler proposed (baselines included), not the INT8 twins measured after."""
    return [t for t in study.trials if t.values is not None and t.user_attrs.get("phase") != search.TWIN_PHASE]


def test_study_is_seeded_and_resumes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    reader = Reader(checkpoint.load(tiny_checkpoint))
    bench = timing.Bench(reader, squad.load_squad(DATA / "eval.json.gz", limit=5))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    first = len(searched(search.run_study(bench, 3, storage, seed=1, name="t", progress=False)))
    again = search.run_study(bench, 5, storage, seed=1, name="t", progress=False)  # continues, 2 more
    assert first == 3 and len(searched(again)) == 5
    assert search.recorded_int8(storage, "t") is True
    assert pareto.pareto_front(search.measurements(again))


def test_int8_twins_of_front_and_grid_are_measured_after_the_search(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bench = timing.Bench(Reader(checkpoint.load(tiny_checkpoint)), squad.load_squad(DATA / "eval.json.gz", limit=3))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = search.run_study(bench, 4, storage, seed=3, name="t", progress=False)
    measured = {m.subnet for m in search.measurements(study)}
    assert len(searched(study)) == 4 and len(measured) > 4
    floats_on_front = [m.subnet for m in pareto.pareto_front(search.measurements(study)) if not m.subnet.quantized]
    grid_pairs = [s for s in measured if "grid" in space.family(s)]  # the 4 trials: the first grid baselines
    assert len(grid_pairs) == 4
    assert all(dataclasses.replace(s, quantized=True) in measured for s in floats_on_front + grid_pairs)
    assert search.int8_twins(study) == []  # nothing left to measure
    count = len(study.trials)
    again = search.run_study(bench, 4, storage, seed=3, name="t", progress=False)  # resumed: nothing new
    assert len(again.trials) == count


def test_a_study_refuses_to_resume_on_other_weights_or_another_int8_kernel(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INT8 scores differ with the kernel's weight bits: a study copied to a CPU that runs the
    other kernel must not feed that kernel's front."""
    examples = squad.load_squad(DATA / "eval.json.gz", limit=2)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    bench = timing.Bench(Reader(checkpoint.load(tiny_checkpoint)), examples)
    search.run_study(bench, 1, storage, 1, "t", False)
    other = "onednn" if search.int8_kernel() == "fbgemm" else "fbgemm"
    monkeypatch.setattr(search, "int8_kernel", lambda: other)
    with pytest.raises(InvalidInput, match="kernel"):
        search.run_study(bench, 2, storage, 1, "t", False)
    monkeypatch.undo()
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_checkpoint, retrained)
    model = checkpoint.load(retrained).model
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    checkpoint.save(model, retrained, retrained)
    with pytest.raises(InvalidInput, match="other weights"):
        search.run_study(timing.Bench(Reader(checkpoint.load(retrained)), examples), 2, storage, 1, "t", False)


def test_without_int8_the_study_samples_floats_only_and_resumes_only_so(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """`--int8 off` (or `auto` on a CPU without a fast integer matmul): no INT8 trial, no twin,
    and the study cannot later be resumed with INT8 on (its front would mix two spaces)."""
    bench = timing.Bench(Reader(checkpoint.load(tiny_checkpoint)), squad.load_squad(DATA / "eval.json.gz", limit=2))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = search.run_study(bench, 30, storage, seed=4, name="t", progress=False, int8=False)
    subnets = [m.subnet for m in search.measurements(study)]
    assert len(subnets) == 30 and not any(s.quantized for s in subnets)  # the first 30 of 31 seeds
    with pytest.raises(InvalidInput, match="INT8 off"):
        search.run_study(bench, 31, storage, seed=4, name="t", progress=False, int8=True)
    assert search.recorded_int8(storage, "t") is False  # what `--int8 auto` resumes it with
    assert search.recorded_int8(storage, "other") is None


def test_pareto_ranks_peel_fronts_in_order() -> None:
    m = pareto.Measurement
    a, b, c, d = SubnetConfig(1.0, 1.0), SubnetConfig(0.75, 1.0), SubnetConfig(0.5, 1.0), SubnetConfig(0.25, 0.5)
    ranks = pareto.pareto_ranks([m(a, 80, 70, 50, 1), m(b, 79, 69, 60, 1), m(c, 70, 60, 20, 1), m(d, 60, 50, 30, 1)])
    assert [[x.subnet for x in r] for r in ranks] == [[c, a], [d, b]]
    assert pareto.pareto_ranks([]) == []


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


def test_side_by_side_timing_needs_a_round() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        timing.side_by_side(None, [SubnetConfig(1.0, 1.0)], rounds=0)  # type: ignore[arg-type]


class RecordingReader(Reader):
    """The real reader, noting which configuration ran which question, in order."""

    calls: list[tuple[str, int]]
    question: dict[int, int]  # id of a question's windows -> its index in the bench

    def logits(self, windows, indices, subnet):  # type: ignore[no-untyped-def]
        self.calls.append((subnet.id, self.question[id(windows)]))
        return super().logits(windows, indices, subnet)


def test_side_by_side_times_every_configuration_on_the_same_block_in_turn(tiny_checkpoint: Path) -> None:
    """Drift must hit every configuration alike: each runs the same few questions (after one
    untimed) before the next block starts, and the median over rounds comes back per config."""
    reader = RecordingReader(checkpoint.load(tiny_checkpoint))
    bench = timing.Bench(reader, squad.load_squad(DATA / "eval.json.gz", limit=12))
    reader.question = {id(w): i for i, w in enumerate(bench.windows)}
    full, narrow = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 0.5)
    reader.calls = []
    ms = bench.blocked_pass([full, narrow], block=5)
    assert set(ms) == {full, narrow} and all(v > 0 for v in ms.values())
    turns = [(0, range(5)), (5, range(5, 10)), (10, range(10, 12))]
    expected = [(s.id, q) for first, block in turns for s in (full, narrow) for q in (first, *block)]
    assert reader.calls == expected
    reader.calls = []
    latency = timing.side_by_side(bench, [full, narrow], rounds=3)
    assert set(latency) == {full, narrow} and all(v > 0 for v in latency.values())
    warm_ups = 2 * timing.WARMUP
    blocks = -(-12 // timing.TIMING_BLOCK)
    assert len(reader.calls) == warm_ups + 3 * 2 * (12 + blocks)  # rounds x configs x (timed + 1 per block)
    reader.calls = []
    timing.side_by_side(bench, [full, narrow], rounds=1, block=5)  # the block asked for, not the default
    assert reader.calls[warm_ups:] == expected
    with pytest.raises(InvalidSubnet):
        timing.side_by_side(bench, [SubnetConfig(1.0, 1.0, (1.0,))], rounds=1)  # wrong length count


class ClockBench(timing.Bench):
    """A bench whose question i takes i + 1 seconds: the means say which forwards were timed."""

    def __init__(self, questions: int) -> None:
        self.windows = [None] * questions  # type: ignore[list-item]

    def forward(self, index, subnet):  # type: ignore[no-untyped-def]
        return float(index + 1), [], []


def test_a_blocked_pass_averages_every_question_once_and_no_turn_starter() -> None:
    full, narrow = SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 0.5)
    ms = ClockBench(12).blocked_pass([full, narrow], block=5)  # the untimed turn starters: 1, 6 and 11 s
    assert ms == {full: 6500.0, narrow: 6500.0}  # the mean of 1..12 s, in ms


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
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report stopped part-way resumes: what was scored on the whole split is in the storage."""
    reader = Reader(checkpoint.load(tiny_checkpoint))
    examples = squad.load_squad(DATA / "eval.json.gz", limit=3)
    bench = timing.Bench(reader, examples[:2])
    study = search.run_study(bench, 2, f"sqlite:///{tmp_path / 's.db'}", seed=5, name="r", progress=False, int8=False)
    trials = search.measurements(study)
    scored: list[SubnetConfig] = []
    real = search_report.full_split_scores

    def counted(reader: Reader, examples: list[squad.SquadExample], subnet: SubnetConfig) -> tuple[float, float]:
        scored.append(subnet)
        return real(reader, examples, subnet)

    monkeypatch.setattr(search_report, "full_split_scores", counted)
    scores = search.StudyScores(study, examples)
    first, entries, _ = search_report.build(reader, bench, examples, trials, {"subset": 2}, False, scores)
    stored = search.StudyScores(optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / 's.db'}"), examples)
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


def test_a_seed_whose_trial_failed_is_queued_again(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Ctrl-C marks the running trial failed; resuming must still measure that seed (Optuna's own
    `skip_if_exists` would count it as there)."""
    bench = timing.Bench(Reader(checkpoint.load(tiny_checkpoint)), squad.load_squad(DATA / "eval.json.gz", limit=1))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = search.run_study(bench, 1, storage, seed=5, name="f", progress=False)
    interrupted = study.ask()  # the next queued seed, as a process killed while measuring it leaves it
    study.tell(interrupted, state=optuna.trial.TrialState.FAIL)
    [failed] = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    lost = failed.system_attrs["fixed_params"]
    assert lost not in search.queued_or_measured(study)
    seeds = sum(len(p) for p in space.baseline_params(bench.reader.checkpoint.config.num_hidden_layers).values())
    study = search.run_study(bench, seeds + 1, storage, seed=5, name="f", progress=False)  # the lost one last
    assert lost in search.queued_or_measured(study)
    measured = {m.subnet for m in search.measurements(study)}
    assert SubnetConfig(lost["width"], lost["depth"]) in measured


def cost_below(reader: Reader, subnet: SubnetConfig) -> bool:
    """Whether a mixed-width sub-network costs fewer MACs than its base width throughout."""
    config = reader.checkpoint.config
    uniform = SubnetConfig(subnet.width, subnet.depth, subnet.lengths, subnet.quantized)
    return cost.macs(config, subnet, 100) < cost.macs(config, uniform, 100)


def test_baselines_are_measured_first_and_reported(tiny_checkpoint: Path, tmp_path: Path) -> None:
    reader = Reader(checkpoint.load(tiny_checkpoint))
    examples = squad.load_squad(DATA / "eval.json.gz", limit=4)
    bench = timing.Bench(reader, examples)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    search.run_study(bench, 2, storage, seed=2, name="b", progress=False)  # stopped with seeds still queued
    seeds = space.baseline_params(reader.checkpoint.config.num_hidden_layers)
    assert len(seeds["mixed widths"]) == 8  # at base width 0.5, the last layer two widths down is one
    study = search.run_study(bench, 41, storage, seed=2, name="b", progress=False)
    trials = search.measurements(study)
    grid, lengths, late, mixed = trials[:12], trials[12:22], trials[22:31], trials[31:39]
    assert len({t.subnet for t in trials[:39]}) == 39  # resuming queued no seed twice
    assert all(t.subnet.lengths is None and not t.subnet.quantized for t in grid)
    assert len({(t.subnet.width, t.subnet.depth) for t in grid}) == 12
    assert all((t.subnet.width, t.subnet.depth) == (1.0, 1.0) and t.subnet.lengths for t in lengths)
    firsts = [t.subnet.lengths[0] for t in lengths]  # type: ignore[index]
    assert firsts == sorted(firsts, reverse=True) and len(set(firsts)) == 10
    assert {t.subnet.width for t in late} == {1.0, 0.75, 0.5} and all(t.subnet.depth == 1.0 for t in late)
    half = reader.checkpoint.config.num_hidden_layers // 2  # the tiny model's layers: the first half keeps every token
    assert all(set(t.subnet.lengths[:half]) == {1.0} and t.subnet.lengths[-1] < 1 for t in late)  # type: ignore[index]
    assert {t.subnet.width for t in mixed} == {1.0, 0.75, 0.5}
    for t in mixed:  # full depth and length; the first and last two layers narrower, the middle at the base width
        widths = t.subnet.layer_widths
        assert t.subnet.depth == 1.0 and t.subnet.lengths is None and widths is not None
        assert widths[1] == t.subnet.width and widths[-1] < t.subnet.width and cost_below(reader, t.subnet)

    report, entries, fronts = search_report.build(reader, bench, examples, trials, {"subset": 4})
    assert [m.subnet.id for m in fronts["full"]] == ["w100d100"]
    assert report["checks"]["joint_never_below_grid"] and report["checks"]["joint_never_below_lengths"]
    configs = [row["config"] for row in report["int8"]]
    assert entries and len(configs) == len(set(configs))  # a point shipped as float and INT8 is one row
    assert set(configs) == {e.subnet.id.removesuffix("-q8") for e in entries}
    search_report.write(report, tmp_path)
    assert "speed-up" in (tmp_path / "search.md").read_text()


def test_a_study_from_before_the_narrowing_genes_gets_only_the_new_seeds(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Seeds a study recorded without `narrow{i}` genes are the same seeds: resuming it queues the
    mixed-width seeds, not every old one a second time."""
    reader = Reader(checkpoint.load(tiny_checkpoint))
    bench = timing.Bench(reader, squad.load_squad(DATA / "eval.json.gz", limit=1))
    storage, layers = f"sqlite:///{tmp_path / 's.db'}", reader.checkpoint.config.num_hidden_layers
    old = optuna.create_study(study_name="o", storage=storage, directions=["maximize", "minimize"])
    for key, value in (("checkpoint", reader.checkpoint.fingerprint()), ("int8", True)):
        old.set_user_attr(key, value)
    old.set_user_attr("int8_kernel", search.int8_kernel())
    seeds = space.baseline_params(layers)
    for family_name in ("grid", "lengths", "late drops"):
        for params in seeds[family_name]:
            old.enqueue_trial({k: v for k, v in params.items() if not k.startswith("narrow")})
    study = search.run_study(bench, 0, storage, seed=1, name="o", progress=False)
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 31 + len(seeds["mixed widths"])
