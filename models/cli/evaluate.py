"""`dynaqa score` and `dynaqa eval`: the official metric of a predictions file, and one
sub-network run over a SQuAD file and scored."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models.cli.options import add_compiled, emit
from models.data import metric, squad
from models.errors import InvalidInput
from models.infer import checkpoint as ckpt
from models.nn import cost
from models.nn.subnet import SubnetConfig, parse_lengths


def cmd_score(args: argparse.Namespace) -> None:
    examples = squad.load_squad(args.data)
    predictions = squad.read_json(args.predictions)
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise InvalidInput(f"{args.predictions} must be a JSON object mapping question id to answer text")
    emit(metric.score({e.qid: e.answers for e in examples}, predictions))


def subnet_from_args(args: argparse.Namespace, checkpoint: ckpt.Checkpoint) -> SubnetConfig:
    """The sub-network `eval` runs: by --subnet id, or built from --width/--depth/--lengths/...;
    never both, and always one the checkpoint was trained for."""
    if args.subnet is not None:
        if any(v is not None for v in (args.width, args.depth, args.lengths, args.layer_widths)) or args.int8:
            raise InvalidInput("give either --subnet or --width/--depth/--lengths/--layer-widths/--int8, not both")
        return checkpoint.resolve(args.subnet)
    lengths = parse_lengths(args.lengths) if args.lengths else None
    widths = parse_lengths(args.layer_widths, "--layer-widths") if args.layer_widths else None
    width = args.width if args.width is not None else max(widths) if widths else 1.0
    subnet = SubnetConfig(width, args.depth if args.depth is not None else 1.0, lengths, args.int8, widths)
    checkpoint.check(subnet)
    return subnet


def cmd_eval(args: argparse.Namespace) -> None:
    from models.infer.reader import Reader

    if args.limit is not None and args.limit <= 0:
        raise InvalidInput(f"--limit must be positive, got {args.limit}")
    checkpoint = ckpt.load(args.checkpoint, compiled=args.compiled, bf16=args.bf16)
    subnet = subnet_from_args(args, checkpoint)
    if args.bf16 and subnet.quantized:
        raise InvalidInput("--bf16 runs the float weights in bfloat16: it has no INT8 (-q8) form")
    examples = squad.load_squad(args.data, args.limit)
    if not examples:
        raise InvalidInput(f"{args.data} has no questions")
    reader = Reader(checkpoint, max_length=args.max_length, stride=args.stride)
    began = time.perf_counter()
    answers, windows = reader.predict(examples, subnet, args.batch_size, progress=not args.quiet)
    seconds = time.perf_counter() - began
    predictions = {qid: answer.text for qid, answer in answers.items()}
    scores = metric.score({e.qid: e.answers for e in examples}, predictions)
    window_macs = [cost.macs(checkpoint.config, subnet, n) for n in windows.lengths()]
    if args.predictions_out:
        Path(args.predictions_out).write_text(json.dumps(predictions, indent=1) + "\n")
    emit(
        {
            **scores,
            "subnet": subnet.to_dict(),
            "macs_per_window_mean": round(sum(window_macs) / len(window_macs)),
            "windows": len(windows),
            "padding": "dynamic (batches of similar-length windows)",
            "precision": "bf16" if args.bf16 else "int8" if subnet.quantized else "float32",
            "seconds": round(seconds, 3),
            "checkpoint": str(checkpoint.path),
        }
    )


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `score` and `eval`."""
    p = sub.add_parser(
        "score",
        help="official SQuAD v1.1 EM/F1 of a predictions file",
        description="Score PRED.json (question id -> answer text) against SQuAD.json with the official "
        "v1.1 metric. Prints {exact_match, f1, n}; unanswered questions score zero.",
    )
    p.add_argument("--data", required=True, help="SQuAD v1.1 JSON (.json or .json.gz)")
    p.add_argument("--predictions", required=True, help="JSON object: question id -> answer text")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "eval",
        help="run a sub-network over a SQuAD file and score it",
        description="Answer every question of a SQuAD file with one sub-network and print EM/F1, the "
        "sub-network, its mean MACs per window and the wall time. Lengths are ratios of each input's "
        "real length kept after each kept layer (non-increasing), e.g. --depth 0.5 --lengths 0.8,0.6,0.4.",
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped one)")
    p.add_argument("--data", default=str(squad.DEFAULT_EVAL), help="SQuAD v1.1 JSON[.gz] (default: the eval split)")
    _add_subnet_flags(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward (default 16)")
    p.add_argument("--max-length", type=int, default=squad.MAX_LENGTH, help="tokens per window (384)")
    p.add_argument("--stride", type=int, default=squad.STRIDE, help="overlap between windows (128)")
    p.add_argument("--predictions-out", default=None, help="write question id -> answer JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="every weight and activation in bfloat16 (CPUs with AVX512-BF16 or AMX run its matmuls "
        "natively): the F1 a bf16 kernel would serve; not with --int8",
    )
    add_compiled(p)
    p.set_defaults(func=cmd_eval)


def _add_subnet_flags(p: argparse.ArgumentParser) -> None:
    """The flags `subnet_from_args` reads."""
    p.add_argument("--width", type=float, default=None, help="width multiplier: 1, 0.75, 0.5 or 0.25")
    p.add_argument("--depth", type=float, default=None, help="depth multiplier: 1, 0.75 or 0.5")
    p.add_argument("--lengths", default=None, help="comma-separated keep ratios, one per kept layer")
    p.add_argument(
        "--layer-widths",
        default=None,
        help="comma-separated widths, one per kept layer (e.g. 0.5,0.75,0.75,0.75,0.5,0.5); --width is the widest",
    )
    p.add_argument(
        "--int8", action="store_true", help="the INT8 copy of the linear layers (this CPU's kernel), as ids ending -q8"
    )
    p.add_argument("--subnet", default=None, help="a sub-network id (w50d75, or a Pareto id from the profile)")
