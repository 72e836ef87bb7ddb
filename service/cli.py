"""Entry point of the `dynaqa` console script: model commands plus `serve`."""

from __future__ import annotations

import argparse
import sys

from models import cli as model_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynaqa",
        description="One dynamic BERT checkpoint for extractive QA, served within each request's "
        "latency budget. Every command prints JSON on stdout; progress and logs go to stderr.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_cli.add_commands(sub)
    p = sub.add_parser("serve", help="run the HTTP service (not built yet)")
    p.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> None:
    sys.stderr.write("dynaqa serve: not built yet (the service is issue #5)\n")
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return model_cli.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
