"""What the side-by-side benchmarks share: their command line and the batch-1 pass over real
eval questions that `dynaqa search` also times (each question alone, at its real length, after an
untimed warm-up of a few questions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from models.data import squad
from models.data.squad import DEFAULT_EVAL
from models.infer.checkpoint import DEFAULT_DIR
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.search.timing import WARMUP

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
