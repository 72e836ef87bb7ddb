"""Search the accuracy/latency frontier over width x depth x per-layer lengths (issue #4).

Multi-objective Optuna (NSGA-II: it keeps a whole front per generation, handles the mixed
categorical/continuous space without a surrogate model, and is seeded and resumable through an
Optuna storage). Each trial runs one sub-network over a fixed subset of eval questions at batch 1
(their real lengths, no padding) and measures F1 and the mean forward latency on this CPU; MACs
are recorded too. Lengths are parametrised as per-layer keep factors in [0.5, 1] whose running
product gives the keep ratios, so every sampled configuration is non-increasing by construction;
each kept layer may also run 0-2 trained widths below the base width (`subnet_from_trial`).
After the search, the INT8 twin of every float configuration on the front and of every width x depth
pair is measured as well.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from models.data import metric
from models.data.squad import SquadExample, Windows
from models.errors import InvalidInput
from models.infer.quantize import int8_kernel
from models.infer.reader import Reader
from models.nn import cost
from models.nn.subnet import DEPTHS, WIDTHS, SubnetConfig, kept_layer_count

if TYPE_CHECKING:
    import numpy as np

FACTOR_STEP = 0.05
WARMUP = 3  # questions run untimed before each measurement
TIMING_BLOCK = 10  # questions per configuration's turn in side-by-side timing (`Bench.blocked_pass`)


@dataclass(frozen=True)
class Measurement:
    subnet: SubnetConfig
    f1: float
    exact_match: float
    latency_ms: float  # mean per question, batch 1, on this CPU
    macs: float  # mean per window


class Bench:
    """A fixed question subset, tokenised once, run one question at a time."""

    def __init__(self, reader: Reader, examples: list[SquadExample]) -> None:
        self.reader = reader
        self.examples = examples
        self.windows: list[Windows] = [reader.windows([e]) for e in examples]

    def warm_up(self, subnet: SubnetConfig) -> None:
        """Untimed forwards: a configuration's first forwards pay for allocations (and for
        building its INT8 modules) that the service pays once at start-up; timed, they would
        make whichever configuration a process measures first look slower."""
        for i in range(min(WARMUP, len(self.windows))):
            self.forward(i, subnet)

    def forward(self, index: int, subnet: SubnetConfig) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Seconds one question's forward took (batch 1, its real length) and its span logits."""
        windows = self.windows[index]
        began = time.perf_counter()
        start, end = self.reader.logits(windows, list(range(len(windows))), subnet)
        return time.perf_counter() - began, start, end

    def measure(self, subnet: SubnetConfig) -> Measurement:
        self.reader.checkpoint.check(subnet)
        self.warm_up(subnet)
        predictions, seconds, macs = {}, [], []
        for i, (example, windows) in enumerate(zip(self.examples, self.windows, strict=True)):
            took, start, end = self.forward(i, subnet)
            seconds.append(took)
            predictions[example.qid] = self.reader.decode(example, windows, list(range(len(windows))), start, end).text
            macs += [cost.macs(self.reader.checkpoint.config, subnet, n) for n in windows.lengths()]
        scores = metric.score({e.qid: e.answers for e in self.examples}, predictions)
        return Measurement(
            subnet, scores["f1"], scores["exact_match"], 1000 * statistics.fmean(seconds), statistics.fmean(macs)
        )

    def blocked_pass(
        self, subnets: list[SubnetConfig], block: int = TIMING_BLOCK, bar: tqdm | None = None
    ) -> dict[SubnetConfig, float]:
        """Mean ms per question of each configuration over the whole subset, timed in turns of
        `block` questions: every configuration runs the same block, then the next block.

        Why blocks: this VM's speed drifts, at times by tens of percent for seconds on end, and
        a whole pass per turn (4-11 s) lets one such spell land on one configuration: session
        17's report read width 0.75 INT8 at 1.31x the full model, scratch runs 1.51x and 1.93x.
        A turn of 10 questions is under a second, so a spell spans every configuration's turn
        alike (`benchmarks.timing_stability`: across 4 processes that ratio spread 0.29 in
        whole passes, 0.17 in blocks). Not one question per turn: the previous configuration's
        weights would then always fill the cache, as they do not in steady serving; each turn
        starts with one untimed question for the same reason.
        `bar` advances by one per block.
        """
        seconds: dict[SubnetConfig, list[float]] = {s: [] for s in subnets}
        for begin in range(0, len(self.windows), block):
            for subnet in subnets:
                self.forward(begin, subnet)
                questions = range(begin, min(begin + block, len(self.windows)))
                seconds[subnet] += [self.forward(i, subnet)[0] for i in questions]
            if bar is not None:
                bar.update()
        return {s: 1000 * statistics.fmean(t) for s, t in seconds.items()}


def subnet_from_trial(trial, num_layers: int, allow_lengths: bool = True, int8: bool = True) -> SubnetConfig:  # type: ignore[no-untyped-def]
    """Sample a sub-network: width, depth, INT8 or not (`int8`: whether it may be) and (optionally)
    per kept layer a narrowing and a keep factor.

    `width` is the base width; gene `narrow{i}` makes the i-th kept layer 0, 1 or 2 trained widths
    narrower (never below the narrowest). Steps rather than free per-layer widths so that the
    base-width configurations (every step 0) are one point of the space that crossover keeps
    reaching, and two steps at most because on this checkpoint a layer two widths down already
    costs F1 (README, "Widths per layer")."""
    width = trial.suggest_categorical("width", list(WIDTHS))
    depth = trial.suggest_categorical("depth", list(DEPTHS))
    quantized = trial.suggest_categorical("int8", [False, True] if int8 else [False])
    if not allow_lengths:
        return SubnetConfig(width, depth, quantized=quantized)
    kept = kept_layer_count(num_layers, depth)
    ratios, running, widths = [], 1.0, []
    for i in range(num_layers):  # all genes are always sampled so NSGA-II's crossover sees one space
        factor = trial.suggest_float(f"keep{i}", 0.5, 1.0, step=FACTOR_STEP)
        steps = trial.suggest_int(f"narrow{i}", 0, MAX_NARROWING)
        if i < kept:
            running *= factor
            ratios.append(round(running, 4))
            widths.append(narrowed(width, steps))
    return SubnetConfig(
        max(widths), depth, tuple(ratios) if any(r < 1.0 for r in ratios) else None, quantized, tuple(widths)
    )


def _fastest_per_subnet(measurements: list[Measurement]) -> list[Measurement]:
    """One measurement per sub-network: its fastest."""
    best: dict[SubnetConfig, Measurement] = {}
    for m in measurements:
        if m.subnet not in best or m.latency_ms < best[m.subnet].latency_ms:
            best[m.subnet] = m
    return list(best.values())


def pareto_front(measurements: list[Measurement]) -> list[Measurement]:
    """Measurements no other one beats on both F1 (higher) and latency (lower), fastest first.

    A sub-network measured more than once (a baseline the search sampled again) counts with its
    fastest measurement, so every subset of the trials sees the same point for it.
    """
    candidates = _fastest_per_subnet(measurements)
    front = [
        m
        for m in candidates
        if not any(
            o.f1 >= m.f1 and o.latency_ms <= m.latency_ms and (o.f1 > m.f1 or o.latency_ms < m.latency_ms)
            for o in candidates
        )
    ]
    return sorted(front, key=lambda m: m.latency_ms)


def pareto_ranks(measurements: list[Measurement]) -> list[list[Measurement]]:
    """Non-dominated sorting: the front, then the front of what is left, and so on."""
    rest, ranks = _fastest_per_subnet(measurements), []
    while rest:
        front = pareto_front(rest)
        ranks.append(front)
        rest = [m for m in rest if m not in front]
    return ranks


LENGTH_FACTORS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
# Keep factors of the late-drop seeds: full length through the first half of the layers, then
# fewer tokens. On this model a drop after layer 1 costs F1 fast (10% of the tokens: -7.6 on 300
# questions) while 30% after layer 4 costs nothing measurable, and NSGA-II's uniform factors in
# [0.5, 1] almost never sample three 1.0s in a row (about 0.6% of draws).
# They apply from the first layer of the second half on (layers 4-6 of 6; a model with fewer
# layers in its second half takes the first factors only).
LATE_DROPS = ((0.7, 1.0, 1.0), (1.0, 0.7, 0.75), (0.8, 0.8, 0.8))
LATE_DROP_WIDTHS = (1.0, 0.75, 0.5)
MAX_NARROWING = 2  # trained widths a layer may sit below the base width (`subnet_from_trial`)
# Narrowing steps of the mixed-width seeds, by layer: the first layer and the last two one width
# down, the last two only, and the first and the last two with the last two widths down. At the
# base width 0.75 these scored 66.28, 66.54 and 66.60 F1 on the first 700 eval questions in INT8
# (uniform 0.75: 66.50, uniform 0.5: 62.02) for 17%, 11% and 22% fewer MACs; narrowing the first
# two or the middle layers instead cost 1.5-3.3 (README, "Widths per layer").
# Written for 6 layers as (first, middle..., second to last, last) and stretched to any count.
NARROWINGS = ((1, 0, 1, 1), (0, 0, 1, 1), (1, 0, 1, 2))
NARROWING_WIDTHS = (1.0, 0.75, 0.5)


def narrowed(width: float, steps: int) -> float:
    """The trained width `steps` below `width`, or the narrowest."""
    return WIDTHS[min(WIDTHS.index(width) + steps, len(WIDTHS) - 1)]


def narrowing_genes(pattern: tuple[int, ...], num_layers: int) -> dict[str, int]:
    """`narrow{i}` genes for a (first, middle, second to last, last) pattern on `num_layers` layers."""
    first, middle, before_last, last = pattern
    steps = [first] + [middle] * max(0, num_layers - 3) + [before_last, last]
    return {f"narrow{i}": s for i, s in enumerate(steps[-num_layers:] if num_layers < 3 else steps)}


def baseline_params(num_layers: int) -> dict[str, list[dict[str, object]]]:
    """Trial parameters of the one-dimensional baselines, by family.

    "grid": DynaBERT's 12 width x depth pairs at full length; "lengths": full width and depth with
    one keep factor at every layer (Dynamic-TinyBERT's geometric length decay); "late drops":
    widths 1, 0.75 and 0.5 at full depth keeping every token through the first half of the layers
    (`LATE_DROPS`); "mixed widths": widths 1, 0.75 and 0.5 at full depth and length with the end
    layers narrowed (`NARROWINGS`). All lie inside the joint space, so they are enqueued as the
    study's first trials: measured in the same run as the search, and the seeds NSGA-II's first
    generation breeds from.
    """
    full = {f"keep{i}": 1.0 for i in range(num_layers)} | {f"narrow{i}": 0 for i in range(num_layers)}
    grid = [{"width": w, "depth": d, "int8": False, **full} for w in WIDTHS for d in DEPTHS]
    lengths = [
        {"width": 1.0, "depth": 1.0, "int8": False, **full, **{f"keep{i}": f for i in range(num_layers)}}
        for f in LENGTH_FACTORS
    ]
    half = num_layers - num_layers // 2
    late = [
        {
            "width": w,
            "depth": 1.0,
            "int8": False,
            **full,
            **{f"keep{i}": f for i, f in zip(range(half, num_layers), factors)},
        }
        for w in LATE_DROP_WIDTHS
        for factors in LATE_DROPS
    ]
    mixed, seen = [], set()
    for w in NARROWING_WIDTHS:
        for pattern in NARROWINGS:
            genes = narrowing_genes(pattern, num_layers)
            widths = tuple(narrowed(w, steps) for steps in genes.values())
            if widths not in seen:  # two steps below 0.5 is one: that pattern repeats another
                seen.add(widths)
                mixed.append({"width": w, "depth": 1.0, "int8": False, **full, **genes})
    return {"grid": grid, "lengths": lengths, "late drops": late, "mixed widths": mixed}


def family(subnet: SubnetConfig) -> set[str]:
    """The baseline families a sub-network belongs to (every one belongs to "joint")."""
    names = {"joint"}
    if not subnet.quantized and subnet.lengths is None and subnet.layer_widths is None:
        names.add("grid")
    if not subnet.quantized and subnet.width == 1.0 and subnet.depth == 1.0 and subnet.layer_widths is None:
        names.add("lengths")
        if subnet.lengths is None:
            names.add("full")
    return names


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
    INT8 trial would take minutes to end up dominated).

    A study remembers the weights it measured (sha256), whether INT8 was in its space and on which
    kernel, and resuming it on other weights, with the other INT8 choice or on another kernel is
    an error: retraining the checkpoint and re-running the same command (or copying a study to a
    CPU that runs the other kernel) would otherwise mix stale scores into the new front."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=20, seed=seed)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True
    )
    made_on, weights = study.user_attrs.get("checkpoint"), bench.reader.checkpoint.fingerprint()
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
    layers = bench.reader.checkpoint.config.num_hidden_layers
    # Seeds a resumed study lacks (added since it started, or lost to an interrupted trial) are
    # queued to run next, within --trials; those measured or already queued are not queued twice.
    # A study from before the narrowing genes recorded its seeds without them: the same seeds.
    unnarrowed = {f"narrow{i}": 0 for i in range(layers)}
    have = [unnarrowed | params for params in queued_or_measured(study)]
    for params in (p for family_params in baseline_params(layers).values() for p in family_params):
        if params not in have:
            study.enqueue_trial(params)

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
        twins = int8_twins(study) if int8 else []
        for trial in tqdm(twins, desc="INT8 twins", unit="trial", disable=not progress or not twins):
            m = bench.measure(replace(SubnetConfig.from_dict(trial.user_attrs["subnet"]), quantized=True))
            twin = optuna.trial.create_trial(
                params={**trial.params, "int8": True},
                distributions=trial.distributions,
                values=[m.f1, m.latency_ms],
                user_attrs={**_trial_attrs(m), "phase": TWIN_PHASE},
            )
            study.add_trial(twin)  # one at a time: a stopped run keeps the twins it measured
    return study


TWIN_PHASE = "int8-twin"


def _trial_attrs(m: Measurement) -> dict[str, object]:
    return {"subnet": m.subnet.to_dict(), "exact_match": m.exact_match, "macs": m.macs}


def int8_twins(study) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The float trials on the front or on the width x depth grid whose INT8 twin has not been
    measured, one per configuration.

    NSGA-II samples `int8` like any other gene, so a good float configuration's quantised twin is
    found only by chance, yet INT8 linear layers speed up the wide configurations most (they are
    GEMM-bound) at a fraction of an F1 point. Measuring the front's twins after the search puts
    each of them on the front exactly when it belongs there, from measurements of the same run.
    The grid's twins too: a float pair can be off the front while its twin is not (session 10:
    `w25d50`, dominated by a length-reduced INT8 point, was the fast end's best answer in INT8).
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


def fronts_by_family(trials: list[Measurement]) -> dict[str, list[Measurement]]:
    """The Pareto front of each family: joint, grid alone, lengths alone, and the full model."""
    return {
        name: pareto_front([m for m in trials if name in family(m.subnet)])
        for name in ("joint", "grid", "lengths", "full")
    }


def best_at(front: list[Measurement], latency_ms: float) -> float | None:
    """The best F1 a front reaches within `latency_ms` (None if nothing is that fast)."""
    f1s = [m.f1 for m in front if m.latency_ms <= latency_ms]
    return max(f1s) if f1s else None


def never_below(joint: list[Measurement], other: list[Measurement]) -> bool:
    """True when, at every latency one of `other`'s points reaches, the joint front does as well."""
    return all((best := best_at(joint, m.latency_ms)) is not None and best >= m.f1 for m in other)


def speedup_within(front: list[tuple[float, float]], full: tuple[float, float], loss: float) -> float:
    """Best full-latency / latency among (f1, latency) points within `loss` F1 of `full`."""
    fits = [latency for f1, latency in front if f1 >= full[0] - loss]
    return full[1] / min(fits) if fits else 1.0


def full_split_scores(reader: Reader, examples: list[SquadExample], subnet: SubnetConfig) -> tuple[float, float]:
    """F1 and EM on the whole split, batched (the re-evaluation of the front)."""
    answers, _ = reader.predict(examples, subnet, progress=False)
    scores = metric.score({e.qid: e.answers for e in examples}, {q: a.text for q, a in answers.items()})
    return scores["f1"], scores["exact_match"]


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


def plot(fronts: dict[str, list[Measurement]], trials: list[Measurement], path: Path, int8: bool = True) -> None:
    """F1 vs latency: every trial, the joint front and the three baselines, from one run
    (`int8`: whether INT8 was in the searched space, for the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.scatter([m.latency_ms for m in trials], [m.f1 for m in trials], s=8, alpha=0.3, color="grey", label="trials")
    styles = {
        "joint": ("o-", "tab:red", f"joint front (width x depth x length{', int8' if int8 else ''})"),
        "grid": ("s--", "tab:blue", "width x depth grid alone"),
        "lengths": ("^--", "tab:green", "lengths alone (full width and depth)"),
        "full": ("*", "black", "full model"),
    }
    for name, (style, color, label) in styles.items():
        front = fronts[name]
        ax.plot([m.latency_ms for m in front], [m.f1 for m in front], style, color=color, label=label, markersize=6)
    ax.set(
        xlabel="mean latency per question, batch 1, this CPU (ms)",
        ylabel="F1 (search subset)",
        title="Accuracy/latency frontier",
        xscale="log",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)  # a new --report directory (session 15 lost a report to it)
    fig.savefig(path, dpi=110)
    plt.close(fig)
