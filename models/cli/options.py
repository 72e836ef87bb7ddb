"""What the model commands share: how each answers, the --compiled flag, and argument types.

Every command prints one JSON object on stdout (pipe it to `jq`); progress bars and logs go to
stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def emit(payload: dict[str, Any]) -> None:
    """A command's answer: one indented JSON object on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def add_compiled(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compiled",
        action="store_true",
        help="compile the layer steps with TorchInductor first (15-30 s at load; small sub-networks run "
        "faster, INT8 scores can differ by a few tenths of F1; the shipped profile was measured without it)",
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value
