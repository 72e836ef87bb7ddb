"""`dynaqa train`: the training stages, one at a time or all, resumable and pausable."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from models.cli.options import emit, non_negative
from models.data.squad import DEFAULT_EVAL
from models.errors import InvalidInput
from models.nn.subnet import SubnetConfig

if TYPE_CHECKING:
    from models.train.loop import Recipe

PAUSED = 3  # exit status of `dynaqa train` stopped by --max-minutes: run it again to continue


def cmd_train(args: argparse.Namespace) -> int:
    from models.train import pipeline

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    base = pipeline.PipelineConfig(Path(args.data), Path(args.out))
    config = replace(
        base,
        teacher=_tuned(args, base.teacher, args.teacher_epochs, args.teacher_lr),
        width=_tuned(args, base.width, args.width_epochs, args.distill_lr),
        width_depth=_tuned(args, base.width_depth, args.width_depth_epochs, args.distill_lr),
        length=_tuned(args, base.length, args.length_epochs, args.distill_lr),
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
        emit({"paused": {"stage": paused.stage, "step": paused.step, "of": paused.steps}, "resume": str(paused)})
        return PAUSED
    if args.ship:
        target = Path(args.ship)
        shutil.copytree(last, target, dirs_exist_ok=True)
        last = target
    emit({"checkpoint": str(last), "config": pipeline.describe(config)})
    return 0


def _tuned(args: argparse.Namespace, recipe: Recipe, epochs: float | None, lr: float | None) -> Recipe:
    """A stage's default recipe with what the flags override."""
    return replace(
        recipe,
        epochs=recipe.epochs if epochs is None else epochs,
        lr=recipe.lr if lr is None else lr,
        max_steps=args.max_steps,
        seed=args.seed,
        batch_size=args.batch_size or recipe.batch_size,
        device=args.device,
    )


def _pairs(text: str) -> tuple[SubnetConfig, ...]:
    """`--pairs w100d100,w50d100`: width x depth pairs at full length, in float, no repeats."""
    pairs = tuple(SubnetConfig.parse_id(part.strip()) for part in text.split(","))
    if any(p.quantized for p in pairs):
        raise InvalidInput(f"--pairs {text!r}: training runs in float, drop the -q8")
    if len(set(pairs)) != len(pairs):
        raise InvalidInput(f"--pairs {text!r} names a pair twice")
    return pairs


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `train`."""
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
    _add_recipe_flags(p)
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
        type=non_negative,
        default=None,
        help="stop after this many minutes, saving the stage's state, and exit with status 3; the same command "
        "continues (fits a run into a lent GPU's call limit or a working session)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """Epochs, learning rates, batches and what stage WD trains."""
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
        type=non_negative,
        default=1.0,
        help="stage WD weight of the hidden-state MSE beside the span-logit loss (default 1, as DynaBERT; "
        "lower favours the predictions of the largest sub-networks)",
    )
