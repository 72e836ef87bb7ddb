"""EM/F1 of every width x depth pair of a checkpoint at full length, on the eval split.

Writes benchmarks/results/grid_eval-<name>.json and .md; with `--record`, stores the F1 per pair
in the checkpoint's training.json as `grid_scores`, which the service reports as expected F1 until
a searched Pareto set (profile.json) replaces the grid. With `--compare NAME`, also writes
grid_compare.md: this checkpoint beside an earlier run of the same script on the teacher (the
untrained-for-width baseline: the teacher simply sliced) and the checks of issue #3.
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
    parser.add_argument(
        "--compare", default=None, help="name of an earlier result (the sliced teacher) to compare against"
    )
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
    if args.compare:
        baseline = json.loads((RESULTS / f"grid_eval-{args.compare}.json").read_text())
        (RESULTS / "grid_compare.md").write_text(compare(report, baseline))
    return 0


def compare(trained: dict, sliced: dict) -> str:
    """The README table: every pair trained vs sliced from the teacher, and the targets."""
    if trained["questions"] != sliced["questions"]:
        raise SystemExit("the two results were scored on different question sets")
    base = {r["id"]: r for r in sliced["rows"]}
    teacher = base["w100d100"]
    lines = [
        f"{trained['questions']} questions (the whole eval split); full length. Teacher (full model before "
        f"width/depth training): EM {teacher['exact_match']:.2f} / F1 {teacher['f1']:.2f}.",
        "",
        "| width | depth | EM | F1 | sliced teacher F1 | gain |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in trained["rows"]:
        b = base[r["id"]]
        lines.append(
            f"| {r['width']} | {r['depth']} | {r['exact_match']:.2f} | {r['f1']:.2f} | {b['f1']:.2f} "
            f"| {r['f1'] - b['f1']:+.2f} |"
        )
    rows = {r["id"]: r for r in trained["rows"]}
    smaller = [r for r in trained["rows"] if r["id"] != "w100d100"]
    worst = min(smaller, key=lambda r: r["f1"] - base[r["id"]]["f1"])
    lines += [
        "",
        f"- full width and depth vs teacher: {rows['w100d100']['f1'] - teacher['f1']:+.2f} F1 (target within 1.0)",
        f"- width 0.5 x depth 1.0 vs teacher: {rows['w50d100']['f1'] - teacher['f1']:+.2f} F1 (target within 4.0)",
        f"- smallest gain over the sliced teacher (pairs below full size): {worst['id']} "
        f"{worst['f1'] - base[worst['id']]['f1']:+.2f} F1 (target >= 10)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
