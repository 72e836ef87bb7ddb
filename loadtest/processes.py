"""Real processes for tests and benchmarks: redis-server and `dynaqa serve`, on loopback only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_cores() -> set[int] | None:
    """Pin this process (the load generator) to the last core; return the others for the server.

    None when there is one core only: then both share it and the report says so.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    os.sched_setaffinity(0, {cores[-1]})
    return set(cores[:-1])


class Redis:
    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class HttpProcess:
    """A local HTTP server in a subprocess, its output in a log file; optionally pinned to `cpus`
    (with every thread it starts), so a load generator on the other cores measures the server
    rather than its own backlog."""

    ready_path = "/v2/health/ready"

    def __init__(
        self,
        command: list[str],
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            command,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        self._wait(self.ready_path, timeout)

    def _wait(self, path: str, timeout: float) -> None:
        deadline = time.time() + timeout
        # One client for the whole wait: `httpx.get` builds a client (and its TLS context) per call,
        # 20 ms of CPU, and ten of those a second skewed the server's start-up calibration.
        with httpx.Client(timeout=1) as client:
            while time.time() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}"
                    )
                try:
                    if client.get(self.url + path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"{path} not OK after {timeout} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> int:
        """SIGTERM, wait; returns the exit status (uvicorn re-raises the signal after a clean drain)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)


class Server(HttpProcess):
    """`dynaqa serve` with `DYNAQA_*` settings given as keyword arguments."""

    def __init__(self, checkpoint: Path, log_path: Path, cpus: set[int] | None = None, **settings: object) -> None:
        port = free_port()
        env = {"DYNAQA_CHECKPOINT": str(checkpoint), "DYNAQA_PORT": str(port)}
        env.update({f"DYNAQA_{k.upper()}": str(v) for k, v in settings.items()})
        super().__init__([sys.executable, "-m", "service.cli", "serve"], port, log_path, env, cpus)

    def wait_live(self, timeout: float = 60) -> None:
        self._wait("/v2/health/live", timeout)

    def stopped_cleanly(self) -> bool:
        """Stopped by SIGTERM after draining: exit status 0 or -SIGTERM, and the drain logged."""
        status = self.stop()
        return status in (0, -signal.SIGTERM) and '"event": "drained"' in self.log_path.read_text()
