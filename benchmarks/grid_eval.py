"""EM/F1 of every width x depth pair of a checkpoint at full length, on the eval split.

Writes benchmarks/results/grid_eval-<name>.json and .md; with `--record`, stores the F1 per pair
in the checkpoint's training.json as `grid_scores`, which the service reports as expected F1 until
a searched Pareto set (profile.json) replaces the grid.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models import checkpoint as ckpt
from models import cost, metric, squad
from models.cli import DEFAULT_EVAL
from models.reader import Reader
from models.subnet import grid

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped one)")
    parser.add_argument("--data", default=str(DEFAULT_EVAL))
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--name", default=None, help="name for the result files (default: checkpoint dir name)")
    parser.add_argument("--record", action="store_true", help="write grid_scores into the checkpoint's training.json")
    args = parser.parse_args(argv)
    checkpoint = ckpt.load(args.checkpoint)
    examples = squad.load_squad(args.data, args.limit)
    gold = {e.qid: e.answers for e in examples}
    reader = Reader(checkpoint)
    rows = []
    for subnet in grid():
        began = time.perf_counter()
        answers, windows = reader.predict(examples, subnet)
        scores = metric.score(gold, {qid: a.text for qid, a in answers.items()})
        macs = sum(cost.macs(checkpoint.config, subnet, n) for n in windows.lengths()) / len(windows)
        rows.append(
            {
                "id": subnet.id,
                "width": subnet.width,
                "depth": subnet.depth,
                **scores,
                "gmacs_per_window": round(macs / 1e9, 3),
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    name = args.name or checkpoint.path.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint.path), "data": args.data, "questions": len(examples), "rows": rows}
    (RESULTS / f"grid_eval-{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        f"{len(examples)} questions of {Path(args.data).name}; full length, dynamic padding",
        "",
        "| width | depth | EM | F1 | GMACs/window |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['width']} | {r['depth']} | {r['exact_match']:.2f} | {r['f1']:.2f} | {r['gmacs_per_window']} |"
        for r in rows
    ]
    (RESULTS / f"grid_eval-{name}.md").write_text("\n".join(lines) + "\n")
    if args.record:
        path = checkpoint.path / "training.json"
        training = json.loads(path.read_text()) if path.exists() else {}
        training["grid_scores"] = {r["id"]: round(r["f1"], 2) for r in rows}
        training["grid_scores_questions"] = len(examples)
        path.write_text(json.dumps(training, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
