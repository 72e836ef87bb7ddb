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

from models.data import metric, squad
from models.data.squad import DEFAULT_EVAL
from models.infer import checkpoint as ckpt
from models.infer.reader import Reader
from models.nn import cost
from models.nn.subnet import grid

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped one)")
    parser.add_argument("--data", default=str(DEFAULT_EVAL))
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--name", default=None, help="name for the result files (default: checkpoint dir name)")
    parser.add_argument("--record", action="store_true", help="write grid_scores into the checkpoint's training.json")
    parser.add_argument(
        "--compare",
        default=None,
        help="comma-separated names of earlier results to compare against, the sliced teacher first",
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
        baselines = {n: json.loads((RESULTS / f"grid_eval-{n}.json").read_text()) for n in args.compare.split(",")}
        (RESULTS / "grid_compare.md").write_text(compare(report, baselines))
    return 0


def compare(trained: dict, baselines: dict[str, dict]) -> str:
    """The README table: every pair trained vs cut from the teacher untrained, and the targets.

    The first baseline is the one the targets are checked against (the teacher simply sliced);
    any others are shown beside it.
    """
    if any(b["questions"] != trained["questions"] for b in baselines.values()):
        raise SystemExit("the results were scored on different question sets")
    names = list(baselines)
    base = {n: {r["id"]: r for r in b["rows"]} for n, b in baselines.items()}
    first = base[names[0]]
    teacher = first["w100d100"]
    lines = [
        f"{trained['questions']} questions (the whole eval split); full length. Teacher (full model before "
        f"width/depth training): EM {teacher['exact_match']:.2f} / F1 {teacher['f1']:.2f}.",
        "",
        "| width | depth | EM | F1 | " + " | ".join(f"{n} F1" for n in names) + f" | gain over {names[0]} |",
        "|---|---|---:|---:|" + "---:|" * len(names) + "---:|",
    ]
    for r in trained["rows"]:
        cells = " | ".join(f"{base[n][r['id']]['f1']:.2f}" for n in names)
        lines.append(
            f"| {r['width']} | {r['depth']} | {r['exact_match']:.2f} | {r['f1']:.2f} | {cells} "
            f"| {r['f1'] - first[r['id']]['f1']:+.2f} |"
        )
    rows = {r["id"]: r for r in trained["rows"]}
    gains = {i: rows[i]["f1"] - first[i]["f1"] for i in rows if i != "w100d100"}
    short = sorted(i for i, g in gains.items() if g < 10)
    lines += [
        "",
        f"- full width and depth vs teacher: {rows['w100d100']['f1'] - teacher['f1']:+.2f} F1"
        " (target: at most 1.0 below)",
        f"- width 0.5 x depth 1.0 vs teacher: {rows['w50d100']['f1'] - teacher['f1']:+.2f} F1"
        " (target: at most 4.0 below)",
        f"- pairs below full size at least 10 F1 above {names[0]}: {len(gains) - len(short)} of {len(gains)}"
        + (f" (short: {', '.join(short)})" if short else ""),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
