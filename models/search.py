"""Search the accuracy/latency frontier over width x depth x per-layer lengths (issue #4).

Multi-objective Optuna (NSGA-II: it keeps a whole front per generation, handles the mixed
categorical/continuous space without a surrogate model, and is seeded and resumable through an
Optuna storage). Each trial runs one sub-network over a fixed subset of eval questions at batch 1
(their real lengths, no padding) and measures F1 and the mean forward latency on this CPU; MACs
are recorded too. Lengths are parametrised as per-layer keep factors in [0.5, 1] whose running
product gives the keep ratios, so every sampled configuration is non-increasing by construction.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from models import cost, metric
from models.reader import Reader
from models.squad import SquadExample, Windows
from models.subnet import DEPTHS, WIDTHS, SubnetConfig, kept_layer_count

FACTOR_STEP = 0.05


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

    def measure(self, subnet: SubnetConfig) -> Measurement:
        self.reader.checkpoint.check(subnet)
        predictions, seconds, macs = {}, [], []
        for example, windows in zip(self.examples, self.windows, strict=True):
            rows = list(range(len(windows)))
            began = time.perf_counter()
            start, end = self.reader.logits(windows, rows, subnet)
            seconds.append(time.perf_counter() - began)
            predictions[example.qid] = self.reader.decode(example, windows, rows, start, end).text
            macs += [cost.macs(self.reader.checkpoint.config, subnet, n) for n in windows.lengths()]
        scores = metric.score({e.qid: e.answers for e in self.examples}, predictions)
        return Measurement(
            subnet, scores["f1"], scores["exact_match"], 1000 * statistics.fmean(seconds), statistics.fmean(macs)
        )


def subnet_from_trial(trial, num_layers: int, allow_lengths: bool = True) -> SubnetConfig:  # type: ignore[no-untyped-def]
    """Sample a sub-network: width, depth and (optionally) keep factors for the kept layers."""
    width = trial.suggest_categorical("width", list(WIDTHS))
    depth = trial.suggest_categorical("depth", list(DEPTHS))
    int8 = trial.suggest_categorical("int8", [False, True])
    if not allow_lengths:
        return SubnetConfig(width, depth, quantized=int8)
    ratios, running = [], 1.0
    for i in range(num_layers):  # all six are always sampled so NSGA-II's crossover sees one space
        factor = trial.suggest_float(f"keep{i}", 0.5, 1.0, step=FACTOR_STEP)
        if i < kept_layer_count(num_layers, depth):
            running *= factor
            ratios.append(round(running, 4))
    return SubnetConfig(width, depth, tuple(ratios) if any(r < 1.0 for r in ratios) else None, int8)


def pareto_front(measurements: list[Measurement]) -> list[Measurement]:
    """Measurements no other one beats on both F1 (higher) and latency (lower), fastest first."""
    front = [
        m
        for m in measurements
        if not any(
            o.f1 >= m.f1 and o.latency_ms <= m.latency_ms and (o.f1 > m.f1 or o.latency_ms < m.latency_ms)
            for o in measurements
        )
    ]
    unique = {m.subnet: m for m in front}
    return sorted(unique.values(), key=lambda m: m.latency_ms)


def run_study(bench: Bench, trials: int, storage: str, seed: int, name: str, progress: bool = True):  # type: ignore[no-untyped-def]
    """Run (or resume) the NSGA-II study; returns it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=20, seed=seed)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True
    )
    layers = bench.reader.checkpoint.config.num_hidden_layers

    def objective(trial) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        subnet = subnet_from_trial(trial, layers)
        m = bench.measure(subnet)
        trial.set_user_attr("subnet", subnet.to_dict())
        trial.set_user_attr("exact_match", m.exact_match)
        trial.set_user_attr("macs", m.macs)
        return m.f1, m.latency_ms

    remaining = max(0, trials - len(study.trials))
    with torch.inference_mode():
        study.optimize(objective, n_trials=remaining, show_progress_bar=progress)
    return study


def front_from_study(study, bench: Bench) -> list[Measurement]:  # type: ignore[no-untyped-def]
    """The study's non-dominated trials as measurements (deduplicated by sub-network)."""
    measured = []
    for trial in study.best_trials:
        subnet = SubnetConfig.from_dict(trial.user_attrs["subnet"])
        f1, latency = trial.values
        measured.append(Measurement(subnet, f1, trial.user_attrs["exact_match"], latency, trial.user_attrs["macs"]))
    return pareto_front(measured)


def full_split_scores(reader: Reader, examples: list[SquadExample], subnet: SubnetConfig) -> tuple[float, float]:
    """F1 and EM on the whole split, batched (the re-evaluation of the front)."""
    answers, _ = reader.predict(examples, subnet, progress=False)
    scores = metric.score({e.qid: e.answers for e in examples}, {q: a.text for q, a in answers.items()})
    return scores["f1"], scores["exact_match"]


def plot(trials: list[Measurement], front: list[Measurement], path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([m.latency_ms for m in trials], [m.f1 for m in trials], s=10, alpha=0.4, label="trials")
    ax.plot([m.latency_ms for m in front], [m.f1 for m in front], "o-", color="tab:red", label="front (subset)")
    ax.set(xlabel="mean latency per question, batch 1 (ms)", ylabel="F1 (search subset)", title="Search: F1 vs latency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
