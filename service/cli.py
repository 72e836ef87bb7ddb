"""Entry point of the `dynaqa` console script: model commands plus `serve`."""

from __future__ import annotations

import argparse
import os
import sys

from models.cli import main as model_cli

# Flags of `dynaqa serve`; each overrides the DYNAQA_* variable of the same name.
_SERVE_FLAGS: dict[str, tuple[type, str]] = {
    "host": (str, "interface to bind (DYNAQA_HOST, default 127.0.0.1)"),
    "port": (int, "TCP port (DYNAQA_PORT, default 8000)"),
    "checkpoint": (str, "checkpoint directory (DYNAQA_CHECKPOINT, default: the shipped one)"),
    "redis_url": (str, "Redis URL for fleet state (DYNAQA_REDIS_URL; unset: in-process)"),
    "default_budget_ms": (float, "budget when a request names none (default 1000)"),
    "max_queue": (int, "queued requests before 503 (default 64)"),
    "max_batch_windows": (int, "windows per micro-batch (default 8)"),
    "threads": (int, "torch threads (0: torch's default)"),
    "pin_subnet": (str, "serve only this sub-network id (comparisons)"),
    "int8": (str, "INT8 sub-networks: auto (only where this CPU's integer matmul pays), on or off (DYNAQA_INT8)"),
    "cache_dir": (str, "latency profile cache (default /tmp/dynaqa)"),
    "log_level": (str, "log level (default INFO)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynaqa",
        description="One dynamic BERT checkpoint for extractive QA, served within each request's "
        "latency budget. Every command prints JSON on stdout; progress and logs go to stderr.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_cli.add_commands(sub)
    p = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Serve POST /v1/qa, /v2/health/{live,ready} and /metrics with uvicorn. Every setting "
        "can also be given as a DYNAQA_* environment variable (see service/settings.py for all of them).",
    )
    for name, (kind, text) in _SERVE_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None, help=text)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads the model)")
    p.set_defaults(func=_serve)
    return parser


def _serve(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from service import logs
    from service.app import create_app
    from service.settings import Settings

    overrides = {name: getattr(args, name) for name in _SERVE_FLAGS if getattr(args, name) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        sys.stderr.write(f"error: invalid settings: {exc}\n")
        raise SystemExit(2) from None
    logs.configure(settings.log_level)
    if args.workers > 1:
        for name, value in overrides.items():
            os.environ[f"DYNAQA_{name.upper()}"] = str(value)
        uvicorn.run(
            "service.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_config=None,
            timeout_keep_alive=settings.keep_alive_s,
            timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
        )
        return
    from service.server import serve

    serve(create_app(settings), settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return model_cli.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
