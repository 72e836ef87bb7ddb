"""What fusing the per-token INT8 scaling in C++ (`models.infer.native`) buys, side by side in one run.

Two tables. Per map: each of a layer's four linear maps at each trained width, on the checkpoint's
own INT8 weights and a window of the eval split's median length, timed as float, INT8 with the
eager scaling and INT8 with the fused one (interleaved rounds, median). Per question: the full
model in float and `--subnets` in turns of 10 questions (`timing.Bench.blocked_pass`, as
`dynaqa search` times its front), each round once with the fused scaling and once eager, the
order alternating; speed-ups are over the full model timed in the same way. Before timing, every
configuration's span logits are compared both ways on every question: they must be equal. The
other fused kernels (attention, the FFN's GELU) stay off throughout: they are not bit-exact, and
`benchmarks.fused_kernels` weighs them.

Writes int8_scaling.{md,json} under --out.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.questions import int8_parser, interleaved, passes_each_way, within, write_report
from models.data import squad
from models.data.squad import DEFAULT_EVAL
from models.infer import native
from models.infer.checkpoint import load as load_checkpoint
from models.infer.reader import Reader
from models.nn.subnet import WIDTHS, SubnetConfig
from models.search import timing

MAPS = ("qkv", "out", "ffn_in", "ffn_out")


def per_map(model: Any, tokens: int, rounds: int) -> list[dict[str, Any]]:
    """Float, INT8 eager and INT8 fused time of each map of layer 0 at each width."""
    rows = []
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for width in WIDTHS:
            floats = model.layer_weights(SubnetConfig(width))[0]
            int8s = model.layer_weights(SubnetConfig(width, quantized=True))[0]
            for name in MAPS:
                f, q = getattr(floats, name), getattr(int8s, name)
                x = torch.randn(tokens, f.weight.shape[1], generator=g)
                us = interleaved(
                    {
                        "float": lambda f=f, x=x: F.linear(x, f.weight, f.bias),
                        "eager": within(native.eager, lambda q=q, x=x: q(x)),
                        "fused": lambda q=q, x=x: q(x),
                    },
                    rounds,
                )
                rows.append({"width": width, "map": name, "shape": [tokens, *f.weight.shape[::-1]], **us})
    return rows


def logits_equal(bench: timing.Bench, subnets: list[SubnetConfig]) -> bool:
    """Whether every question's span logits are equal with the fused and the eager scaling."""
    for subnet in subnets:
        for i in range(len(bench.windows)):
            fused = bench.forward(i, subnet)[1:]
            with native.eager():
                plain = bench.forward(i, subnet)[1:]
            if not all(np.array_equal(a, b) for a, b in zip(fused[0] + fused[1], plain[0] + plain[1], strict=True)):
                return False
    return True


def per_question(bench: timing.Bench, subnets: list[SubnetConfig], rounds: int) -> dict[str, dict[str, float]]:
    """Speed-up over subnets[0] of each configuration, fused and eager, median of `rounds`."""
    ms = passes_each_way(bench, subnets, rounds, {"fused": contextlib.nullcontext, "eager": native.eager})
    return {
        way: {
            s.id: round(statistics.median(f / t for f, t in zip(by_id[subnets[0].id], by_id[s.id], strict=True)), 3)
            for s in subnets
        }
        for way, by_id in ms.items()
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Per map: layer 0's maps on {report['tokens']} tokens (the median eval window), median of "
        f"{report['rounds']} interleaved rounds of 50 calls, microseconds per call.",
        "",
        "| width | map | in x out | float | INT8 eager | INT8 fused | fused saves |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in report["maps"]:
        _, d_in, d_out = row["shape"]
        saved = 1 - row["fused"] / row["eager"]
        lines.append(
            f"| {row['width']} | {row['map']} | {d_in} x {d_out} | {row['float']:.0f} | {row['eager']:.0f} | "
            f"{row['fused']:.0f} | {saved:.0%} |"
        )
    lines += [
        "",
        f"Per question: speed-up over `{report['subnets'][0]}` (float), first {report['questions']} eval questions "
        f"at batch 1, turns of {timing.TIMING_BLOCK} questions, median of {report['rounds']} rounds, each round "
        f"both ways. Span logits fused vs eager equal on every question: {report['identical']}.",
        "",
        "| config | eager scaling | fused scaling |",
        "|---|---:|---:|",
    ]
    for i in report["subnets"][1:]:
        lines.append(f"| `{i}` | {report['speedups']['eager'][i]:.2f}x | {report['speedups']['fused'][i]:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = int8_parser(__doc__)
    args = p.parse_args(argv)
    if native.kernels() is None:
        p.error("the native scaling did not build here (see the warning above): nothing to compare")
    ck = load_checkpoint(args.checkpoint)
    subnets = [ck.resolve(i) for i in args.subnets.split(",")]
    bench = timing.Bench(Reader(ck), squad.load_squad(DEFAULT_EVAL, limit=args.questions))
    tokens = int(statistics.median(n for w in bench.windows for n in w.lengths()))
    with torch.inference_mode(), native.without_fusions():
        identical = logits_equal(bench, subnets)
        speedups = per_question(bench, subnets, args.rounds)
        maps = per_map(ck.model, tokens, args.rounds)
    report = {
        "subnets": [s.id for s in subnets],
        "questions": args.questions,
        "rounds": args.rounds,
        "tokens": tokens,
        "identical": identical,
        "maps": maps,
        "speedups": speedups,
    }
    write_report(args.out, "int8_scaling", report, markdown(report))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
