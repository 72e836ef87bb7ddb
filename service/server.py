"""Running the app under uvicorn with a drain that starts the moment a stop signal arrives."""

from __future__ import annotations

import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.settings import Settings


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: readiness turns false at SIGTERM/SIGINT, before uvicorn stops listening.

    uvicorn then lets in-flight requests finish (up to its graceful timeout) and runs the
    lifespan shutdown, which drains the queue.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.runtime.begin_drain()
        super().handle_exit(sig, frame)


def serve(app: FastAPI, settings: Settings) -> None:
    """Run until a stop signal. Sets the process's GIL switch interval (a process-wide knob, so
    here and not in `create_app`): the event loop then waits at most that long for the GIL when
    it wakes while the model thread is between torch ops."""
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 5,
        # Longer than any load balancer's idle timeout, so the server never closes a keep-alive
        # connection at the moment a client reuses it (that race looks like a lost request).
        timeout_keep_alive=settings.keep_alive_s,
        backlog=4096,
    )
    DrainingServer(config, app).run()
