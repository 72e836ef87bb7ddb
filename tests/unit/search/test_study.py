"""The seeded, resumable study on the tiny checkpoint: baselines first, INT8 twins after, refusals to mix."""

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch

from models.errors import InvalidInput
from models.infer import checkpoint
from models.infer.reader import Reader
from models.nn import cost
from models.nn.subnet import SubnetConfig
from models.search import pareto, space, timing
from models.search import report as search_report
from models.search import study as search
from tests.unit.search.conftest import TinyBench


def searched(study) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The study's trials the sampler proposed (baselines included), not the INT8 twins measured after."""
    return [t for t in study.trials if t.values is not None and t.user_attrs.get("phase") != search.TWIN_PHASE]


def test_study_is_seeded_and_resumes(tiny_bench: TinyBench, storage: str) -> None:
    bench = tiny_bench(5)
    first = len(searched(search.run_study(bench, 3, storage, seed=1, name="t", progress=False)))
    again = search.run_study(bench, 5, storage, seed=1, name="t", progress=False)  # continues, 2 more
    assert first == 3 and len(searched(again)) == 5
    assert search.recorded_int8(storage, "t") is True
    assert pareto.pareto_front(search.measurements(again))


def test_int8_twins_of_front_and_grid_are_measured_after_the_search(tiny_bench: TinyBench, storage: str) -> None:
    bench = tiny_bench(3)
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
    tiny_bench: TinyBench, storage: str, tiny_checkpoint_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INT8 scores differ with the kernel's weight bits: a study copied to a CPU that runs the
    other kernel must not feed that kernel's front."""
    bench = tiny_bench(2)
    search.run_study(bench, 1, storage, 1, "t", False)
    other = "onednn" if search.int8_kernel() == "fbgemm" else "fbgemm"
    monkeypatch.setattr(search, "int8_kernel", lambda: other)
    with pytest.raises(InvalidInput, match="kernel"):
        search.run_study(bench, 2, storage, 1, "t", False)
    monkeypatch.undo()
    retrained = tiny_checkpoint_copy
    model = checkpoint.load(retrained).model
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    checkpoint.save(model, retrained, retrained)
    with pytest.raises(InvalidInput, match="other weights"):
        search.run_study(timing.Bench(Reader(checkpoint.load(retrained)), bench.examples), 2, storage, 1, "t", False)


def test_without_int8_the_study_samples_floats_only_and_resumes_only_so(tiny_bench: TinyBench, storage: str) -> None:
    """`--int8 off` (or `auto` on a CPU without a fast integer matmul): no INT8 trial, no twin,
    and the study cannot later be resumed with INT8 on (its front would mix two spaces)."""
    bench = tiny_bench(2)
    study = search.run_study(bench, 30, storage, seed=4, name="t", progress=False, int8=False)
    subnets = [m.subnet for m in search.measurements(study)]
    assert len(subnets) == 30 and not any(s.quantized for s in subnets)  # the first 30 of 31 seeds
    with pytest.raises(InvalidInput, match="INT8 off"):
        search.run_study(bench, 31, storage, seed=4, name="t", progress=False, int8=True)
    assert search.recorded_int8(storage, "t") is False  # what `--int8 auto` resumes it with
    assert search.recorded_int8(storage, "other") is None


def test_a_seed_whose_trial_failed_is_queued_again(tiny_bench: TinyBench, storage: str) -> None:
    """Ctrl-C marks the running trial failed; resuming must still measure that seed (Optuna's own
    `skip_if_exists` would count it as there)."""
    bench = tiny_bench(1)
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


def test_baselines_are_measured_first_and_reported(tiny_bench: TinyBench, storage: str, tmp_path: Path) -> None:
    bench = tiny_bench(4)
    reader, examples = bench.reader, bench.examples
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


def test_a_study_from_before_the_narrowing_genes_gets_only_the_new_seeds(tiny_bench: TinyBench, storage: str) -> None:
    """Seeds a study recorded without `narrow{i}` genes are the same seeds: resuming it queues the
    mixed-width seeds, not every old one a second time."""
    bench = tiny_bench(1)
    reader = bench.reader
    layers = reader.checkpoint.config.num_hidden_layers
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
