"""The model half of the `dynaqa` command: info, init, score, eval, train, search.

Each command prints one JSON object on stdout (pipe it to `jq`); progress bars and logs go to
stderr. Domain errors become one `error: ...` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from models.cli import checkpoint, evaluate, search, train
from models.errors import DynaqaError


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the model commands on the `dynaqa` parser, in the order `--help` lists them."""
    checkpoint.add(sub)
    evaluate.add(sub)
    train.add(sub)
    search.add(sub)


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
