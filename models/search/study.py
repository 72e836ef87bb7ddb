"""Search the accuracy/latency frontier over width x depth x per-layer lengths (issue #4).

Multi-objective Optuna (NSGA-II: it keeps a whole front per generation, handles the mixed
categorical/continuous space without a surrogate model, and is seeded and resumable through an
Optuna storage). Each trial runs one sub-network of `space` over a fixed subset of eval questions
at batch 1 (`timing.Bench`: their real lengths, no padding) and records F1, the mean forward
latency on this CPU and MACs. After the search, the INT8 twin of every float configuration on the
front and of every width x depth pair is measured as well.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import torch
from tqdm import tqdm

from models.data.squad import SquadExample
from models.errors import InvalidInput
from models.infer.quantize import int8_kernel
from models.nn.subnet import SubnetConfig
from models.search.pareto import Measurement, pareto_front
from models.search.space import baseline_params, family, subnet_from_trial
from models.search.timing import Bench

TWIN_PHASE = "int8-twin"


def recorded_int8(storage: str, name: str) -> bool | None:
    """Whether the study `name` in `storage` has INT8 in its space; None if it has no trials yet.

    `--int8 auto` resumes a study with the choice it was started with: the probe behind auto
    reads FBGEMM on this CPU at 1.16-1.6x, so a later process could decide otherwise and find the
    study it was asked to continue refused."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study in the storage
        return None
    return bool(study.user_attrs.get("int8", True)) if study.trials else None


def queued_or_measured(study) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """The fixed parameters of the study's enqueued trials that completed or still wait to run.

    Not Optuna's `enqueue_trial(skip_if_exists=True)`: it also counts a trial that failed (Ctrl-C
    marks the running one failed) or was left running by a killed process, so that seed would
    never be measured."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING))
    return [t.system_attrs["fixed_params"] for t in trials if "fixed_params" in t.system_attrs]


def run_study(  # type: ignore[no-untyped-def]
    bench: Bench, trials: int, storage: str, seed: int, name: str, progress: bool = True, int8: bool = True
):
    """Run (or resume) the NSGA-II study, the baselines first; returns it. `int8=False` keeps
    INT8 out of the space and skips the twins (a CPU without a fast integer matmul, where each
    INT8 trial would take minutes to end up dominated)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=20, seed=seed)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True
    )
    _claim(study, name, storage, bench.reader.checkpoint.fingerprint(), int8)
    layers = bench.reader.checkpoint.config.num_hidden_layers
    _queue_seeds(study, layers)

    def objective(trial) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        m = bench.measure(subnet_from_trial(trial, layers, int8=int8))
        for key, value in _trial_attrs(m).items():
            trial.set_user_attr(key, value)
        return m.f1, m.latency_ms

    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    searched = [t for t in finished if t.user_attrs.get("phase") != TWIN_PHASE]
    remaining = max(0, trials - len(searched))  # enqueued baselines wait in the study until run
    with torch.inference_mode():
        study.optimize(objective, n_trials=remaining, show_progress_bar=progress)
        if int8:
            _measure_twins(study, bench, progress)
    return study


def _claim(study, name: str, storage: str, weights: str, int8: bool) -> None:  # type: ignore[no-untyped-def]
    """Refuse to resume `study` on other weights, with the other INT8 choice or on another INT8
    kernel, then record what this run measures with.

    Retraining the checkpoint and re-running the same command (or copying a study to a CPU that
    runs the other kernel) would otherwise mix stale scores into the new front."""
    made_on = study.user_attrs.get("checkpoint")
    if study.trials and made_on != weights:
        raise InvalidInput(
            f"study {name!r} in {storage} was measured on other weights (sha256 {str(made_on)[:12]}, these are "
            f"{weights[:12]}): its scores would be stale; pass a new --study or --out"
        )
    if study.trials and study.user_attrs.get("int8", True) != int8:
        raise InvalidInput(
            f"study {name!r} in {storage} was run with INT8 {'on' if not int8 else 'off'}: pass the same --int8 "
            "or a new --study"
        )
    kernel = int8_kernel() if int8 else None
    if study.trials and study.user_attrs.get("int8_kernel", kernel) != kernel:
        raise InvalidInput(
            f"study {name!r} in {storage} measured INT8 on {study.user_attrs['int8_kernel']}'s kernel, this CPU runs "
            f"{kernel}'s (INT8 scores differ with the kernel's weight bits): pass a new --study or --out"
        )
    study.set_user_attr("checkpoint", weights)
    study.set_user_attr("int8", int8)
    study.set_user_attr("int8_kernel", kernel)


def _queue_seeds(study, layers: int) -> None:  # type: ignore[no-untyped-def]
    """Queue the seeds a resumed study lacks (added since it started, or lost to an interrupted
    trial) to run next, within --trials; those measured or already queued are not queued twice.
    A study from before the narrowing genes recorded its seeds without them: the same seeds."""
    unnarrowed = {f"narrow{i}": 0 for i in range(layers)}
    have = [unnarrowed | params for params in queued_or_measured(study)]
    for params in (p for family_params in baseline_params(layers).values() for p in family_params):
        if params not in have:
            study.enqueue_trial(params)


def _measure_twins(study, bench: Bench, progress: bool) -> None:  # type: ignore[no-untyped-def]
    """Measure the INT8 twins `int8_twins` names and add each to the study as a finished trial,
    one at a time: a stopped run keeps the twins it measured."""
    import optuna

    twins = int8_twins(study)
    for trial in tqdm(twins, desc="INT8 twins", unit="trial", disable=not progress or not twins):
        m = bench.measure(replace(SubnetConfig.from_dict(trial.user_attrs["subnet"]), quantized=True))
        twin = optuna.trial.create_trial(
            params={**trial.params, "int8": True},
            distributions=trial.distributions,
            values=[m.f1, m.latency_ms],
            user_attrs={**_trial_attrs(m), "phase": TWIN_PHASE},
        )
        study.add_trial(twin)


def _trial_attrs(m: Measurement) -> dict[str, object]:
    return {"subnet": m.subnet.to_dict(), "exact_match": m.exact_match, "macs": m.macs}


def int8_twins(study) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The float trials on the front or on the width x depth grid whose INT8 twin has not been
    measured, one per configuration.

    NSGA-II samples `int8` like any other gene, so a good float configuration's quantised twin is
    found only by chance, yet INT8 linear layers speed up the wide configurations most (they are
    GEMM-bound) at a fraction of an F1 point. Measuring the front's twins after the search puts
    each of them on the front exactly when it belongs there, from measurements of the same run.
    The grid's twins too: a float pair can be off the front while its twin is not (a dominated
    float pair's INT8 twin can be the fast end's best answer).
    """
    done = [t for t in study.trials if t.values is not None]
    measured = {SubnetConfig.from_dict(t.user_attrs["subnet"]) for t in done}
    on_front = {m.subnet for m in pareto_front(measurements(study))}
    twins = {}
    for trial in done:
        subnet = SubnetConfig.from_dict(trial.user_attrs["subnet"])
        candidate = subnet in on_front or "grid" in family(subnet)
        if candidate and not subnet.quantized and replace(subnet, quantized=True) not in measured:
            twins.setdefault(subnet, trial)
    return list(twins.values())


def measurements(study) -> list[Measurement]:  # type: ignore[no-untyped-def]
    """Every finished trial of the study as a measurement."""
    return [
        Measurement(
            SubnetConfig.from_dict(t.user_attrs["subnet"]),
            t.values[0],
            t.user_attrs["exact_match"],
            t.values[1],
            t.user_attrs["macs"],
        )
        for t in study.trials
        if t.values is not None
    ]


class StudyScores(dict[SubnetConfig, tuple[float, float]]):
    """Whole-split F1 and EM by sub-network, written through to the study's storage.

    Re-scoring the front on the whole split is most of a search's time on a slow CPU; kept in the
    study, a report that was stopped part-way resumes from what it had scored. The attribute names
    the eval questions (a hash of their ids) and whether the layer steps were compiled (compiled
    INT8 scores differ by tenths), so another --data or --compiled starts afresh; the study itself
    already refuses other weights.
    """

    def __init__(self, study, examples: list[SquadExample], compiled: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.study = study
        questions = hashlib.sha1("\n".join(e.qid for e in examples).encode()).hexdigest()[:12]
        self.prefix = f"whole_split:{questions}:{'compiled' if compiled else 'eager'}:"
        for key, value in study.user_attrs.items():
            if key.startswith(self.prefix):
                super().__setitem__(SubnetConfig.from_dict(json.loads(key.removeprefix(self.prefix))), tuple(value))

    def __setitem__(self, subnet: SubnetConfig, scores: tuple[float, float]) -> None:
        super().__setitem__(subnet, scores)
        self.study.set_user_attr(self.prefix + json.dumps(subnet.to_dict(), sort_keys=True), list(scores))
