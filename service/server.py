"""Running the app under uvicorn with a drain that starts the moment a stop signal arrives."""

from __future__ import annotations

import sys
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.settings import Settings


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: readiness turns false at SIGTERM/SIGINT, before uvicorn stops listening.

    With `drain_linger_s`, the replica keeps answering that long first: an HTTP/1.1 server cannot
    close an idle keep-alive connection without racing a client that reuses it, so it stops
    listening only after load balancers have had time to stop sending. uvicorn then lets in-flight
    requests finish (up to its graceful timeout) and runs the lifespan shutdown, which drains.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, linger_s: float = 0.0) -> None:
        super().__init__(config)
        self._app = app
        self._linger_s = linger_s
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = self._app.state.runtime
        if self._exit_at is None and self._linger_s > 0:  # the first signal: linger
            runtime.leave()
            self._exit_at = time.monotonic() + self._linger_s
            return
        runtime.begin_drain()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and not self.should_exit and time.monotonic() >= self._exit_at:
            self._app.state.runtime.begin_drain()
            self.should_exit = True
        return await super().on_tick(counter)


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
    DrainingServer(config, app, settings.drain_linger_s).run()
