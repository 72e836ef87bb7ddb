"""Where a sub-network's batch-1 time goes on this CPU, by kind of operator, side by side.

Why: a speed-up over the full model is capped by whatever a smaller width or INT8 does not
shrink. Width shrinks the linear maps and the attention heads but not the LayerNorms, residuals or
the per-call cost of each operator, and INT8 speeds only the linear maps while adding its own
per-token scaling. This benchmark runs each configuration over the first `--questions` eval
questions at batch 1 and their real lengths (as `dynaqa search` measures), under the torch
profiler, and sums the operators' own CPU time by kind; what the profiler does not see (Python,
module calls, the tokenised batch's assembly) is "outside operators". Rounds are interleaved and
the median kept per configuration and kind, so this machine's drift hits all configurations alike.

The profiler's own overhead inflates the many small operators a little: read the shares, and take
speed-ups from `dynaqa search`'s side-by-side timing.

Then one layer alone, plain and dropping tokens (`--layer-tokens`, float and INT8): what a dropping
layer costs against a plain one at the same input, so "lengths pay" is read per layer, not guessed
from a whole sub-network. Writes op_profile.{md,json} under --out.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.questions import answer_all, eval_windows, parser, warm_up, write_report
from models.data import squad
from models.infer import native
from models.infer.checkpoint import load as load_checkpoint
from models.infer.quantize import int8_enabled, int8_kernel
from models.infer.reader import Reader
from models.nn import drop_restore
from models.nn.layers import AttentionKernels
from models.nn.subnet import SubnetConfig
from models.nn.transformer import EAGER_STEPS, DynamicBertForQA, dropping_layer

NATIVE_SCALING = "dynaqa::int8_scaling"
NATIVE_GELU = "dynaqa::ffn_gelu_int8"
NATIVE_ATTENTION = "dynaqa::attention"
NATIVE_RANKING = "dynaqa::attention_received"
# The `models.infer.native` functions the profile names, and the name each is recorded under.
NATIVE_NAMES = {
    **dict.fromkeys(("scale_rows", "unscale_rows_", "quantize_rows", "dequantize_rows"), NATIVE_SCALING),
    "gelu_quantize_rows": NATIVE_GELU,
}
# Operator name -> kind. Names are torch's own (aten:: and quantized::); an operator not listed is
# "other". Elementwise ops are shared by INT8's per-token scaling, residuals and masks, so they
# are one kind: compare a configuration with its float twin to see what INT8 adds.
KINDS: dict[str, str] = {
    "quantized::linear_with_input_q_dq_qweight_dq_output_fp32": "linear maps (INT8)",
    "aten::_int_mm": "linear maps (INT8)",
    "aten::addmm": "linear maps (float)",
    "aten::mm": "linear maps (float)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::bmm": "attention",
    "aten::_softmax": "attention",
    "aten::gelu": "GELU",
    "aten::native_layer_norm": "LayerNorm",
    "aten::index": "token drop and restore",
    "aten::index_put_": "token drop and restore",
    "aten::_index_put_impl_": "token drop and restore",
    "aten::topk": "token drop and restore",
    "aten::index_select": "embeddings",
    NATIVE_SCALING: "INT8 scaling (fused C++)",
    NATIVE_GELU: "GELU (fused C++, with its INT8 scaling)",
    NATIVE_ATTENTION: "attention",
    NATIVE_RANKING: "token drop and restore",
    "aten::embedding": "embeddings",
}
ELEMENTWISE = {
    "aten::abs",
    "aten::amax",
    "aten::round_",
    "aten::mul",
    "aten::mul_",
    "aten::add",
    "aten::add_",
    "aten::div",
    "aten::reciprocal",
    "aten::clamp_min_",
    "aten::sum",
    "aten::where",
    "aten::masked_fill",
    "aten::copy_",
}
OUTSIDE = "outside operators (Python, module calls)"
# Keeping almost every token, a dropping layer costs what ranking adds; keeping a tenth, what a
# layer costs beyond its share of the tokens.
LAYER_KEEPS = (0.99, 0.8, 0.5, 0.1)


def kind_of(name: str) -> str:
    """The kind an operator's time is summed under."""
    if name in KINDS:
        return KINDS[name]
    return "elementwise" if name in ELEMENTWISE else "other operators"


@contextlib.contextmanager
def native_named(model: DynamicBertForQA) -> Iterator[None]:
    """The fused C++ kernels are pybind calls, not torch operators: the profiler would file them
    under "outside operators". Named here (and only here, where the profiler's cost is accepted):
    the INT8 scaling, the FFN's fused GELU, and the attention kernels `model`'s layers run."""
    originals = {name: getattr(native, name) for name in NATIVE_NAMES}

    def named(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            with torch.profiler.record_function(label):
                return fn(*args)

        return call

    for name, fn in originals.items():
        setattr(native, name, named(fn, NATIVE_NAMES[name]))
    kernels = model.encoder.layers[0].attention.kernels
    if kernels is not None:
        model.use_attention_kernels(
            AttentionKernels(named(kernels.context, NATIVE_ATTENTION), named(kernels.received, NATIVE_RANKING))
        )
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(native, name, fn)
        if kernels is not None:
            model.use_attention_kernels(kernels)


def profile_once(reader: Reader, windows: list[squad.Windows], subnet: SubnetConfig) -> dict[str, float]:
    """Milliseconds per question by kind, one pass over `windows` under the profiler."""
    warm_up(reader, windows, subnet)
    with native_named(reader.checkpoint.model), profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        answer_all(reader, windows, subnet)
        wall = time.perf_counter() - began
    per_kind: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        per_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e3  # microseconds -> ms
    per_kind["total"] = 1e3 * wall
    return {k: v / len(windows) for k, v in per_kind.items()}


def median_row(runs: list[dict[str, float]], kinds: list[str]) -> dict[str, float]:
    """Each kind's median over the rounds, the median total, and as "outside" what the kinds leave
    of that total, so a row adds up. The profiler records operators on the calling thread only
    (intra-op workers are not separate events), so the kinds stay below the wall time."""
    ms = {k: statistics.median(run.get(k, 0.0) for run in runs) for k in kinds}
    total = statistics.median(run["total"] for run in runs)
    return {
        **{k: round(v, 3) for k, v in ms.items()},
        OUTSIDE: round(total - sum(ms.values()), 3),
        "total": round(total, 3),
    }


def markdown(report: dict[str, Any]) -> str:
    ids = [r["config"] for r in report["rows"]]
    kinds = [k for k in report["kinds"] if any(r["ms"].get(k, 0) >= 0.05 for r in report["rows"])]
    lines = [
        f"Batch 1, first {report['questions']} eval questions at their real lengths, {report['threads']} threads, "
        f"INT8 kernel {report['int8_kernel']}; operators' own CPU time under the torch profiler, ms per question, "
        f"median of {report['rounds']} interleaved rounds (share of the configuration's total in brackets).",
        "",
        "| kind | " + " | ".join(f"`{i}`" for i in ids) + " |",
        "|---|" + "---:|" * len(ids),
    ]
    for kind in [*kinds, "total"]:
        cells = []
        for r in report["rows"]:
            ms, total = r["ms"].get(kind, 0.0), r["ms"]["total"]
            cells.append(f"{ms:.2f}" if kind == "total" else f"{ms:.2f} ({100 * ms / total:.0f}%)")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    full = report["rows"][0]["ms"]["total"]
    speedups = [f"{full / r['ms']['total']:.2f}x" for r in report["rows"]]
    lines.append("| speed-up over the first | " + " | ".join(speedups) + " |")
    ceilings = [f"{full / c:.2f}x" if (c := int8_ceiling(report["rows"], r)) else "" for r in report["rows"]]
    if any(ceilings):
        lines.append("| ... if INT8 cost only its maps | " + " | ".join(ceilings) + " |")
        lines += [
            "",
            "The last row: an INT8 configuration's speed-up if everything but its linear maps took what its float "
            "twin's takes (the twin's total, less its float maps, plus the INT8 maps): INT8's per-token scaling, and "
            "whatever else differs between the two runs, free.",
        ]
    return "\n".join(lines) + "\n"


def int8_ceiling(rows: list[dict[str, Any]], row: dict[str, Any]) -> float | None:
    """ms per question of an INT8 row if INT8 added nothing but its maps; None without a float twin."""
    twin = next((r for r in rows if r["config"] + "-q8" == row["config"]), None)
    if twin is None:
        return None
    ms, own = twin["ms"], row["ms"]
    # The INT8 row's float maps (the span head) are in its twin's float maps already.
    return (
        ms["total"]
        - ms.get("linear maps (float)", 0.0)
        + own.get("linear maps (INT8)", 0.0)
        + own.get("linear maps (float)", 0.0)
    )


def layer_costs(model: DynamicBertForQA, tokens: int, quantized: bool, rounds: int) -> dict[str, float]:
    """Median ms of the first full-width layer over `tokens` random hidden states at batch 1:
    plain, and dropping to each of `LAYER_KEEPS` (ranking, selection and the kept tokens' rest)."""
    layer = model.encoder.layers[0]
    with torch.inference_mode():  # the packed (and INT8) weights are inference's only
        weights = model.layer_weights(SubnetConfig(quantized=quantized))[0]
    x = torch.randn(1, tokens, model.config.hidden_size, generator=torch.Generator().manual_seed(tokens))
    alive = drop_restore.TokenSet.full(torch.ones(1, tokens, dtype=torch.long))
    runs: dict[str, Callable[[], object]] = {"plain": functools.partial(EAGER_STEPS.whole, layer, x, None, weights)}
    for keep in LAYER_KEEPS:
        counts = drop_restore.keep_counts([tokens], keep, [tokens])
        runs[f"keeps {keep}"] = functools.partial(
            dropping_layer, EAGER_STEPS, (layer, weights, None), x, None, alive, counts
        )
    samples: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            run()
        for _ in range(rounds):
            for name, run in runs.items():
                began = time.perf_counter()
                for _ in range(5):
                    run()
                samples[name].append((time.perf_counter() - began) / 5 * 1e3)
    return {name: round(statistics.median(s), 3) for name, s in samples.items()}


def layer_markdown(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["ms"])
    lines = [
        "",
        "## One layer, plain and dropping tokens",
        "",
        "Full width, batch 1, ms per call (median of interleaved rounds of 5 calls); in brackets, the ratio to the "
        "plain layer on the same input. A dropping layer keeps its share of the tokens after attention.",
        "",
        "| tokens | precision | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for r in rows:
        plain = r["ms"]["plain"]
        cells = [f"{ms:.2f} ({ms / plain:.2f})" for ms in r["ms"].values()]
        lines.append(f"| {r['tokens']} | {r['precision']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    cli = parser(
        __doc__,
        questions=100,
        subnets="w100d100,w75d100,w75d100-q8,w50d100-q8",
        subnets_help="comma-separated ids, the first is the reference (default: the full model, width 0.75 in float "
        "and INT8, width 0.5 INT8); ids with lengths are looked up in the checkpoint's profile",
    )
    cli.add_argument(
        "--layer-tokens",
        default="180,384",
        help="token counts at which one layer is timed plain and dropping (the eval split's median window is about "
        "180 tokens); empty to skip",
    )
    args = cli.parse_args(argv)

    int8 = int8_enabled("auto")
    checkpoint = load_checkpoint(args.checkpoint, int8=int8)
    subnets = [checkpoint.resolve(i) for i in dict.fromkeys(args.subnets.split(","))]
    if not int8 and any(s.quantized for s in subnets):
        raise SystemExit("error: INT8 does not pay on this CPU (DYNAQA_INT8=auto turns it off): drop the -q8 ids")
    reader = Reader(checkpoint)
    windows = eval_windows(reader, args.questions)
    samples: dict[str, list[dict[str, float]]] = {s.id: [] for s in subnets}
    for _ in range(args.rounds):
        for subnet in subnets:
            samples[subnet.id].append(profile_once(reader, windows, subnet))
    kinds = sorted({k for runs in samples.values() for run in runs for k in run} - {"total"})
    rows = [{"config": i, "ms": median_row(runs, kinds)} for i, runs in samples.items()]
    kinds.append(OUTSIDE)
    report = {
        "checkpoint": str(checkpoint.path),
        "questions": len(windows),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "int8_kernel": int8_kernel() if int8 else None,
        "kinds": kinds,
        "rows": rows,
    }
    lengths = [int(t) for t in args.layer_tokens.split(",")] if args.layer_tokens else []
    report["layers"] = [
        {"tokens": t, "precision": "INT8" if q else "float", "ms": layer_costs(checkpoint.model, t, q, args.rounds * 5)}
        for t in lengths
        for q in ([False, True] if int8 else [False])
    ]
    write_report(
        args.out, "op_profile", report, markdown(report) + (layer_markdown(report["layers"]) if lengths else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
