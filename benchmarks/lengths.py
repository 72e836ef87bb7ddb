"""Lengths alone: what Drop-and-Restore buys at full width and depth, chosen on unseen articles.

Each candidate keeps every token through the first layers and drops after later ones (on this
checkpoint a drop after layer 1 costs F1 fast, one after layer 4 or in the last layer little). Every
candidate runs in float and in INT8; each is timed side by side with the full model of its precision
(batch 1, the first `--questions` eval questions at their real lengths, median of interleaved
rounds) and scored on both article halves of the eval split (`models.search.heldout`): the claim
"fastest within 1 F1 of the full float model" is chosen on the select half and its loss read on
the report half. Writes lengths.{md,json,png} under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.questions import RESULTS, write_report
from models.data import squad
from models.errors import InvalidInput
from models.infer import checkpoint as ckpt
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig, parse_lengths
from models.search import heldout
from models.search.timing import Bench, side_by_side

# Late drops, mildest first; (1, 1, 1, 0.7, 0.7, 0.7) is the lengths-only point the float front shipped.
CANDIDATES = (
    "1,1,1,1,1,0.2",
    "1,1,1,1,0.8,0.2",
    "1,1,1,1,0.7,0.2",
    "1,1,1,0.9,0.7,0.2",
    "1,1,1,0.9,0.6,0.1",
    "1,1,1,0.8,0.6,0.2",
    "1,1,1,0.7,0.7,0.7",
    "1,1,1,0.7,0.5,0.2",
)
TARGET_SPEEDUP = 1.25  # issue #32: a lengths-only point at least this much faster, within 1 F1


def measure(
    reader: Reader, examples: list[squad.SquadExample], candidates: list[tuple[float, ...]], questions: int, rounds: int
) -> dict[str, Any]:
    """Per precision: latencies side by side, and the held-out judgement of the candidates."""
    bench = Bench(reader, examples[:questions])
    results: dict[str, Any] = {}
    for precision, int8 in (("float", False), ("int8", True)):
        full = SubnetConfig(quantized=int8)
        subnets = [SubnetConfig(lengths=lengths, quantized=int8) for lengths in candidates]
        ms = side_by_side(bench, [full, *subnets], rounds, progress=True)
        judged = heldout.judge(reader, examples, [(s, ms[s]) for s in subnets], ms[full], progress=True)
        for row, subnet in zip(judged["front"], subnets, strict=True):
            row.update(lengths=list(subnet.lengths or ()), latency_ms=round(ms[subnet], 2))
        results[precision] = {"full_model_ms": round(ms[full], 2), **judged}
    return results


def markdown(results: dict[str, Any], questions: int, rounds: int) -> str:
    lines = [
        "# Lengths alone: full width and depth, Drop-and-Restore only",
        "",
        f"Batch 1, the first {questions} eval questions at their real lengths, median of {rounds} interleaved "
        "rounds, each candidate against the full model of its own precision; F1 on the two article halves "
        "(loss against the full float model).",
    ]
    for precision, r in results.items():
        lines += [
            "",
            f"## {precision} (full model {r['full_model_ms']:.2f} ms)",
            "",
            "| lengths | ms | speed-up | F1 select | F1 report | loss select | loss report |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["front"]:
            lines.append(
                f"| {','.join(f'{x:g}' for x in row['lengths'])} | {row['latency_ms']:.2f} | {row['speedup']:.2f}x "
                f"| {row['f1_select']:.2f} | {row['f1_report']:.2f} | {row['loss_select']:+.2f} | "
                f"{row['loss_report']:+.2f} |"
            )
        claim = next(c for c in r["claims"] if c["margin"] == 1.0)
        verdict = (
            "no candidate within 1 F1 on the select half"
            if claim["id"] is None
            else f"`{claim['id']}` {claim['speedup']:.2f}x, {claim['loss_report']:+.2f} F1 on the unseen half"
        )
        met = claim["id"] is not None and claim["holds_on_report"] and claim["speedup"] >= TARGET_SPEEDUP
        lines += [
            "",
            f"Fastest within 1 F1, chosen on the select half: {verdict} (target {TARGET_SPEEDUP}x: "
            f"{'met' if met else 'not met'}).",
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (precision, r), marker in zip(results.items(), "os", strict=True):
        rows = r["front"]
        ax.scatter([x["speedup"] for x in rows], [x["loss_report"] for x in rows], marker=marker, label=precision)
    ax.axhline(1.0, color="C7", linestyle="--", linewidth=1, label="1 F1")
    ax.axvline(TARGET_SPEEDUP, color="C3", linestyle=":", linewidth=1, label=f"{TARGET_SPEEDUP}x")
    ax.set_xlabel("speed-up over the full model of the same precision (batch 1)")
    ax.set_ylabel("F1 below the full float model, report half (unseen articles)")
    ax.set_title("Lengths alone: full width and depth")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ckpt.DEFAULT_DIR))
    p.add_argument("--data", default=str(squad.DEFAULT_EVAL), help="SQuAD eval JSON[.gz]")
    p.add_argument("--candidates", default=";".join(CANDIDATES), help="keep ratios per layer, ';' between candidates")
    p.add_argument("--questions", type=int, default=100, help="timed questions (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    checkpoint = ckpt.load(args.checkpoint)
    candidates = [parse_lengths(c, "--candidates") for c in args.candidates.split(";")]
    for lengths in candidates:
        checkpoint.check(SubnetConfig(lengths=lengths))
    examples = squad.load_squad(args.data)
    if not heldout.article_halves(examples)[1]:
        raise InvalidInput(f"{args.data}: the held-out judgement needs at least two articles")
    results = measure(Reader(checkpoint), examples, candidates, args.questions, args.rounds)
    write_report(
        args.out,
        "lengths",
        {"questions": args.questions, "rounds": args.rounds, **results},
        markdown(results, args.questions, args.rounds),
    )
    plot(results, Path(args.out) / "lengths.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
