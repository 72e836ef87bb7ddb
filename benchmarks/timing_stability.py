"""How steady a side-by-side speed-up is from one process to the next, by turn length.

Why: `dynaqa search` ships speed-ups (ratios to the full model) from one timing run, and on this
2-core VM the same pair read 1.31x in one run and 1.93x in another when each configuration's turn
was a whole pass over the 200-question subset (4-11 s). `timing.Bench.blocked_pass` gives each
configuration turns of a few questions instead. This runs the same comparison in `--processes`
fresh processes, each timing the configurations both ways (whole-pass turns, then turns of
`--block` questions; `--rounds` rounds each, median kept, as `timing.side_by_side`), and
reports each configuration's speed-up over the first per process, with its spread.

Writes timing_stability.{md,json} under --out; `--child` is the per-process worker.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchmarks.questions import int8_parser, write_report
from models.cli.options import positive_int
from models.data import squad
from models.data.squad import DEFAULT_EVAL
from models.infer.checkpoint import load as load_checkpoint
from models.infer.reader import Reader
from models.search import timing


def child(checkpoint: str, ids: list[str], questions: int, rounds: int, block: int) -> dict[str, dict[str, float]]:
    """Speed-ups over the first id, per turn length, in this process."""
    ck = load_checkpoint(checkpoint)
    subnets = [ck.resolve(i) for i in ids]
    bench = timing.Bench(Reader(ck), squad.load_squad(DEFAULT_EVAL, limit=questions))
    out = {}
    for name, turn in (("whole pass", len(bench.windows)), (f"{block} questions", block)):
        ms = timing.side_by_side(bench, subnets, rounds, block=turn)
        out[name] = {s.id: round(ms[subnets[0]] / ms[s], 3) for s in subnets[1:]}
    return out


def spread(values: list[float]) -> float:
    return round(max(values) - min(values), 3)


def markdown(report: dict[str, Any]) -> str:
    ids = report["subnets"][1:]
    lines = [
        f"Speed-up over `{report['subnets'][0]}` (batch 1, first {report['questions']} eval questions, median of "
        f"{report['rounds']} side-by-side rounds), one column per fresh process; spread = max - min.",
        "",
        "| turn | config | " + " | ".join(f"process {i + 1}" for i in range(len(report["runs"]))) + " | spread |",
        "|---|---|" + "---:|" * (len(report["runs"]) + 1),
    ]
    for turn in report["runs"][0]:
        for i in ids:
            values = [run[turn][i] for run in report["runs"]]
            cells = " | ".join(f"{v:.2f}x" for v in values)
            lines.append(f"| {turn} | `{i}` | {cells} | {spread(values):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = int8_parser(__doc__)
    p.add_argument("--processes", type=positive_int, default=4, help="fresh processes (default 4)")
    p.add_argument(
        "--block", type=positive_int, default=timing.TIMING_BLOCK, help="questions per turn (default: the search's)"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    ids = args.subnets.split(",")
    if args.child:
        print(json.dumps(child(args.checkpoint, ids, args.questions, args.rounds, args.block)))
        return 0
    command = [sys.executable, "-m", "benchmarks.timing_stability", "--child", *(argv or sys.argv[1:])]
    runs = []
    for i in range(args.processes):
        print(f"process {i + 1} of {args.processes} ...", file=sys.stderr)
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)  # its errors stay visible
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    report = {"subnets": ids, "questions": args.questions, "rounds": args.rounds, "block": args.block, "runs": runs}
    report["spread"] = {turn: {i: spread([run[turn][i] for run in runs]) for i in ids[1:]} for turn in runs[0]}
    write_report(args.out, "timing_stability", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
