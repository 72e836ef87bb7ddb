"""What inference's fused attention and FFN GELU (`models.infer.native`) buy, side by side in one run.

Both arms run the shipped model with the fused INT8 scaling; one also runs the attention kernel
(AVX-512, heads of 32) and the GELU fused between the FFN's INT8 maps, the other torch's
attention and GELU (`native.without_fusions`). Two tables. Per input length: the full model in
float and INT8 on random tokens at batch 1, interleaved rounds of 10 forwards, median. Per question:
the first `--questions` eval questions at their real lengths, in turns of 10 questions
(`timing.Bench.blocked_pass`, as `dynaqa search` times its fronts), each round both ways in
alternating order; speed-ups are over the float full model of the same arm, so the float model's
own gain from the attention kernel is in the baseline. The largest span-logit difference between
the arms is reported too (the kernels match torch to float rounding, not bit for bit).

Writes fused_kernels.{md,json} under --out.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from benchmarks.questions import interleaved, parser, passes_each_way, within, write_report
from models.data import squad
from models.data.squad import DEFAULT_EVAL
from models.infer import native
from models.infer.checkpoint import load as load_checkpoint
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.nn.transformer import DynamicBertForQA
from models.search import timing

LENGTHS = (128, 384)
DEFAULT_SUBNETS = "w100d100,w100d100-q8,w75d100-q8,w75d100-v6dabae-q8,w75d100-veeec5a-q8,w50d100-q8"
LENGTH_ROUNDS = 7  # at least, for the per-length table: rounds of 10 forwards are short
# Each arm and what it runs inside: torch's attention and GELU, or the shipped fused kernels.
WAYS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "torch": native.without_fusions,
    "fused": contextlib.nullcontext,
}


def per_length(model: DynamicBertForQA, rounds: int) -> list[dict[str, Any]]:
    """ms per forward of the full model, float and INT8, both ways, at each of `LENGTHS` tokens."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for tokens in LENGTHS:
        ids = torch.randint(1000, 20000, (1, tokens), generator=g)
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        for subnet in (SubnetConfig(), SubnetConfig(quantized=True)):
            forward = functools.partial(model, ids, mask, types, subnet)
            us = interleaved({"torch": within(native.without_fusions, forward), "fused": forward}, rounds, repeats=10)
            rows.append({"tokens": tokens, "config": subnet.id, **{k: v / 1000 for k, v in us.items()}})
    return rows


def logit_gap(bench: timing.Bench, subnets: list[SubnetConfig]) -> float:
    """The largest |span logit| difference between the two arms over every question."""
    gap = 0.0
    for subnet in subnets:
        for i in range(len(bench.windows)):
            fused = bench.forward(i, subnet)[1:]
            with native.without_fusions():
                plain = bench.forward(i, subnet)[1:]
            pairs = zip(fused[0] + fused[1], plain[0] + plain[1], strict=True)
            gap = max(gap, *(float(np.abs(a - b).max()) for a, b in pairs))
    return gap


def per_question(bench: timing.Bench, subnets: list[SubnetConfig], rounds: int) -> dict[str, dict[str, Any]]:
    """ms per question and speed-up over subnets[0], each way, median of `rounds`."""
    ms = passes_each_way(bench, subnets, rounds, WAYS)
    medians = {way: {i: statistics.median(v) for i, v in by_id.items()} for way, by_id in ms.items()}
    return {
        way: {i: {"ms": round(m, 2), "speedup": round(medians[way][subnets[0].id] / m, 3)} for i, m in by_id.items()}
        for way, by_id in medians.items()
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Per input length: the full model on random tokens at batch 1, median of {report['length_rounds']} "
        "interleaved rounds of 10 forwards, ms per forward.",
        "",
        "| tokens | config | torch's attention and GELU | fused kernels | fused is faster by |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in report["lengths"]:
        lines.append(
            f"| {row['tokens']} | `{row['config']}` | {row['torch']:.2f} | {row['fused']:.2f} | "
            f"{row['torch'] / row['fused']:.2f}x |"
        )
    first = report["subnets"][0]
    lines += [
        "",
        f"Per question: first {report['questions']} eval questions at batch 1 and their real lengths, turns of "
        f"{timing.TIMING_BLOCK} questions, median of {report['rounds']} rounds, each round both ways; speed-up over "
        f"`{first}` of the same arm. Largest span-logit difference between the arms: {report['logit_gap']:.3g}.",
        "",
        "| config | torch: ms | torch: speed-up | fused: ms | fused: speed-up | fused is faster by |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for i in report["subnets"]:
        t, f = report["questions_table"]["torch"][i], report["questions_table"]["fused"][i]
        lines.append(
            f"| `{i}` | {t['ms']:.2f} | {t['speedup']:.2f}x | {f['ms']:.2f} | {f['speedup']:.2f}x | "
            f"{t['ms'] / f['ms']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = parser(
        __doc__,
        questions=200,
        subnets=DEFAULT_SUBNETS,
        subnets_help="comma-separated ids (any in the profile), the first is the reference (default: the float "
        "full model and the oneDNN front's points near it)",
    )
    args = p.parse_args(argv)
    ck = load_checkpoint(args.checkpoint)
    if native.kernels() is None or not native.attention_runs(ck.model.config.head_size):
        p.error("the native kernels did not build here, or this CPU has no AVX-512: nothing to compare")
    subnets = [ck.resolve(i) for i in args.subnets.split(",")]
    bench = timing.Bench(Reader(ck), squad.load_squad(DEFAULT_EVAL, limit=args.questions))
    with torch.inference_mode():
        gap = logit_gap(bench, subnets)
        table = per_question(bench, subnets, args.rounds)
        lengths = per_length(ck.model, max(args.rounds, LENGTH_ROUNDS))
    report = {
        "subnets": [s.id for s in subnets],
        "questions": args.questions,
        "rounds": args.rounds,
        "length_rounds": max(args.rounds, LENGTH_ROUNDS),
        "logit_gap": gap,
        "lengths": lengths,
        "questions_table": table,
    }
    write_report(args.out, "fused_kernels", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
