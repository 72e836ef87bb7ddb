"""Request bodies read under a size limit, before FastAPI parses them.

A route class, as FastAPI documents for custom request handling: the body is read here, so an
oversize one raises `PayloadTooLarge` where the error table answers it (a declared length at once,
a streamed body as soon as it passes the limit), and FastAPI parses the bytes read.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from service.errors import PayloadTooLarge


async def read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body of {int(declared)} bytes exceeds {max_bytes}")
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            raise PayloadTooLarge(f"body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class LimitedBodyRoute(APIRoute):
    """Reads the body under `app.state.settings.max_body_bytes` before the route's own handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                try:
                    request._body = await read_limited(request, request.app.state.settings.max_body_bytes)
                except PayloadTooLarge:
                    raise
                except Exception as exc:  # a client gone mid-body: FastAPI's own answer to a body it cannot read
                    raise HTTPException(400, "There was an error parsing the body") from exc
            return await handler(request)

        return limited
