"""What the side-by-side benchmarks share: their command line and the batch-1 pass over real
eval questions that `dynaqa search` also times (each question alone, at its real length, after an
untimed warm-up of a few questions)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from models.data import squad
from models.data.squad import DEFAULT_EVAL
from models.infer.checkpoint import DEFAULT_DIR
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.search.timing import WARMUP, Bench

RESULTS = Path(__file__).resolve().parent / "results"


def parser(doc: str | None, questions: int, subnets: str | None, subnets_help: str) -> argparse.ArgumentParser:
    """--checkpoint, --questions, --rounds, --subnets and --out, with these defaults."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_DIR))
    p.add_argument("--questions", type=int, default=questions, help=f"eval questions per pass (default {questions})")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--subnets", default=subnets, help=subnets_help)
    p.add_argument("--out", default=str(RESULTS))
    return p


def int8_parser(doc: str | None) -> argparse.ArgumentParser:
    """`parser` for the side-by-side INT8 benchmarks: 200 questions, the full model as reference."""
    return parser(
        doc,
        questions=200,
        subnets="w100d100,w75d100-q8,w50d100-q8",
        subnets_help="comma-separated ids (any in the profile), the first is the reference (default: the full "
        "model, widths 0.75 and 0.5 in INT8)",
    )


def eval_windows(reader: Reader, limit: int) -> list[squad.Windows]:
    """The first `limit` eval questions, each tokenised alone (batch 1)."""
    return [reader.windows([e]) for e in squad.load_squad(DEFAULT_EVAL, limit=limit)]


def warm_up(reader: Reader, windows: list[squad.Windows], subnet: SubnetConfig) -> None:
    """Untimed, as the search's: a configuration's first forwards pay for allocations."""
    answer_all(reader, windows[:WARMUP], subnet)


def answer_all(reader: Reader, windows: list[squad.Windows], subnet: SubnetConfig) -> None:
    """Every question's span logits, one question at a time."""
    for w in windows:
        reader.logits(w, list(range(len(w))), subnet)


def write_report(out: str | Path, name: str, report: dict[str, Any], text: str) -> None:
    """`name`.json and `name`.md under `out` (created), and the markdown on stdout."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (folder / f"{name}.md").write_text(text)
    print(text)


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, repeats: int = 50) -> dict[str, float]:
    """Median microseconds per call of each, over `rounds` rounds that each run every call."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            began = time.perf_counter()
            for _ in range(repeats):
                call()
            times[name].append(1e6 * (time.perf_counter() - began) / repeats)
    return {name: statistics.median(t) for name, t in times.items()}


def within(context: Callable[[], AbstractContextManager[Any]], call: Callable[[], object]) -> Callable[[], object]:
    """`call`, run inside a fresh `context()` each time (e.g. `native.eager`)."""

    def run() -> object:
        with context():
            return call()

    return run


def passes_each_way(
    bench: Bench,
    subnets: list[SubnetConfig],
    rounds: int,
    ways: dict[str, Callable[[], AbstractContextManager[Any]]],
) -> dict[str, dict[str, list[float]]]:
    """ms per question of every configuration, one blocked pass (as `dynaqa search` times) per way
    and round, each way inside its context; the ways' order alternates by round so that neither
    always runs first. Lists by way, then configuration id, one value per round."""
    ms: dict[str, dict[str, list[float]]] = {way: {s.id: [] for s in subnets} for way in ways}
    for context in ways.values():
        with context():
            for subnet in subnets:
                bench.warm_up(subnet)
    order = list(ways)
    for r in range(rounds):
        for way in order if r % 2 == 0 else order[::-1]:
            with ways[way]():
                measured = bench.blocked_pass(subnets)
            for s in subnets:
                ms[way][s.id].append(measured[s])
    return ms
