"""Batch-1 timing on a fixed question subset: one configuration at a time (`Bench.measure`, what
a trial records), and several side by side (`side_by_side`, what the shipped front is judged on)."""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING

from tqdm import tqdm

from models.data import metric
from models.data.squad import SquadExample, Windows
from models.infer.reader import Reader
from models.nn import cost
from models.nn.subnet import SubnetConfig
from models.search.pareto import Measurement

if TYPE_CHECKING:
    import numpy as np

WARMUP = 3  # questions run untimed before each measurement
TIMING_BLOCK = 10  # questions per configuration's turn in side-by-side timing (`Bench.blocked_pass`)
TIMING_ROUNDS = 3  # side-by-side rounds per timing pass, the median kept (`dynaqa search --timing-rounds`)


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
            best = self.reader.decode(example, windows, list(range(len(windows))), start, end)[0]
            predictions[example.qid] = best.text
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

        Why blocks: this machine's speed drifts, at times by tens of percent for seconds on end,
        and a whole pass per turn (4-11 s) lets one such spell land on one configuration. A turn
        of 10 questions is under a second, so a spell spans every configuration's turn alike
        (`benchmarks.timing_stability` compares the two). Not one question per turn: the previous
        configuration's weights would then always fill the cache, as they do not in steady
        serving; each turn starts with one untimed question for the same reason.
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


def side_by_side(
    bench: Bench,
    subnets: list[SubnetConfig],
    rounds: int = TIMING_ROUNDS,
    progress: bool = False,
    block: int = TIMING_BLOCK,
) -> dict[SubnetConfig, float]:
    """Batch-1 latency of each configuration: the median over `rounds` blocked passes
    (`Bench.blocked_pass`: every configuration runs the same `block` questions in turn).

    The study measures each configuration once, minutes apart from the full model, and this
    machine's speed drifts by tens of percent over a run; speed-ups are ratios, so the full model
    and the front are timed again here, close together in time.
    """
    if rounds < 1:
        raise ValueError(f"side-by-side timing needs at least one round, not {rounds}")
    for subnet in subnets:
        bench.reader.checkpoint.check(subnet)
        bench.warm_up(subnet)
    times: dict[SubnetConfig, list[float]] = {s: [] for s in subnets}
    blocks = rounds * math.ceil(len(bench.windows) / block)
    with tqdm(
        total=blocks, desc=f"side-by-side timing, {len(subnets)} configs", unit="block", disable=not progress
    ) as bar:
        for _ in range(rounds):
            for subnet, ms in bench.blocked_pass(subnets, block, bar).items():
                times[subnet].append(ms)
    return {s: statistics.median(t) for s, t in times.items()}
