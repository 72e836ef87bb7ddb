"""A server that refuses everything at once: the load generator's own latency floor.

Under uvicorn like `dynaqa serve`, every request gets the same 503 + Retry-After + JSON error that
an overloaded replica sends, without reading the body or doing any other work. What a client
measures against it at a given rate is what the generator and the HTTP stack add by themselves,
so the overload report can put the service's refusal latency next to that floor.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.types import Receive, Scope, Send

REFUSAL = b'{"error": {"type": "overloaded", "message": "queue full"}}'
HEADERS = [(b"content-type", b"application/json"), (b"retry-after", b"1")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    ready = scope["path"] == "/v2/health/ready"
    await send({"type": "http.response.start", "status": 200 if ready else 503, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"{}" if ready else REFUSAL})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
