"""What compiling the layer step buys: eager vs compiled, side by side, on real eval questions.

One process, one model: the layer step is compiled once (`models.infer.compile.compile_layers`) and
each round times every configuration twice, once with the eager step and once with the compiled
one (the step is a swappable attribute of the encoder), over the first `--questions` eval
questions at batch 1 and their real lengths, as `dynaqa search` measures. Rounds are interleaved
and the median per configuration is kept, so drift of this machine's speed hits both alike.

Why it matters: at batch 1 a small sub-network is mostly Python and dispatcher time (an INT8
linear map is about a dozen eager ops), so the compiled step speeds small configurations up far
more than the full model, and the speed-ups of the frontier depend on it. Writes
benchmarks/results/compiled_step.{md,json}.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from benchmarks.questions import answer_all, eval_windows, parser, warm_up, write_report
from models.data.squad import Windows
from models.infer.checkpoint import load as load_checkpoint
from models.infer.compile import compile_layers
from models.infer.quantize import int8_enabled
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.nn.transformer import EAGER_STEPS, LayerSteps


def mean_ms(reader: Reader, windows: list[Windows], subnet: SubnetConfig, step: LayerSteps) -> float:
    """Mean ms per question of `subnet` with the encoder running `step`, after the usual warm-up."""
    reader.checkpoint.model.encoder.steps = step
    warm_up(reader, windows, subnet)
    began = time.perf_counter()
    answer_all(reader, windows, subnet)
    return 1000 * (time.perf_counter() - began) / len(windows)


def rows_of(median: dict[tuple[str, str], float], subnets: list[SubnetConfig]) -> list[dict[str, Any]]:
    """Per configuration: eager and compiled ms, and the speed-ups over each other and the full model."""
    full = subnets[0].id
    return [
        {
            "config": s.id,
            "eager_ms": round(median[(s.id, "eager")], 3),
            "compiled_ms": round(median[(s.id, "compiled")], 3),
            "compiled_speedup": round(median[(s.id, "eager")] / median[(s.id, "compiled")], 3),
            "vs_full_eager": round(median[(full, "eager")] / median[(s.id, "eager")], 3),
            "vs_full_compiled": round(median[(full, "compiled")] / median[(s.id, "compiled")], 3),
        }
        for s in subnets
    ]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Batch 1, first {report['questions']} eval questions at their real lengths, {report['threads']} threads, "
        f"median of {report['rounds']} interleaved rounds; compiling took {report['compile_seconds']:.1f} s.",
        "",
        "| config | eager ms | compiled ms | compiled speed-up | vs full (both eager) | vs full (both compiled) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| `{r['config']}` | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | {r['compiled_speedup']:.2f}x "
            f"| {r['vs_full_eager']:.2f}x | {r['vs_full_compiled']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parser(
        __doc__,
        questions=200,
        subnets=None,
        subnets_help="comma-separated ids (default: w100d100 and the front this CPU serves: its INT8 kernel's where "
        "INT8 pays, else pareto_float)",
    ).parse_args(argv)

    int8 = int8_enabled("auto")
    checkpoint = load_checkpoint(args.checkpoint, int8=int8)
    began = time.perf_counter()
    if not compile_layers(checkpoint.model):
        raise SystemExit("error: the layer step did not compile on this machine (see the warning above)")
    compile_seconds = time.perf_counter() - began
    steps = {"eager": EAGER_STEPS, "compiled": checkpoint.model.encoder.steps}
    ids = args.subnets.split(",") if args.subnets else ["w100d100", *(e.subnet.id for e in checkpoint.front(int8))]
    subnets = [checkpoint.resolve(i) for i in dict.fromkeys(ids)]
    reader = Reader(checkpoint)
    windows = eval_windows(reader, args.questions)
    samples: dict[tuple[str, str], list[float]] = {(s.id, k): [] for s in subnets for k in steps}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for subnet in subnets:
                for kind, step in steps.items():
                    samples[(subnet.id, kind)].append(mean_ms(reader, windows, subnet, step))
    median = {key: statistics.median(values) for key, values in samples.items()}
    report = {
        "checkpoint": str(checkpoint.path),
        "questions": len(windows),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "compile_seconds": round(compile_seconds, 1),
        "rows": rows_of(median, subnets),
    }
    write_report(args.out, "compiled_step", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
