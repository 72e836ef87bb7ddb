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


class Server:
    """`dynaqa serve` in a subprocess; its JSON log goes to a file the test can read.

    `cpus` pins the server (every thread it will start) to those cores, so a load generator on
    the other cores measures the server rather than its own backlog.
    """

    def __init__(self, checkpoint: Path, log_path: Path, cpus: set[int] | None = None, **settings: object) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DYNAQA_CHECKPOINT": str(checkpoint),
            "DYNAQA_PORT": str(self.port),
        }
        env.update({f"DYNAQA_{k.upper()}": str(v) for k, v in settings.items()})
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_live(self, timeout: float = 60) -> None:
        self._wait("/v2/health/live", timeout)

    def wait_ready(self, timeout: float = 180) -> None:
        self._wait("/v2/health/ready", timeout)

    def _wait(self, path: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
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

    def stopped_cleanly(self) -> bool:
        """Stopped by SIGTERM after draining: exit status 0 or -SIGTERM, and the drain logged."""
        status = self.stop()
        return status in (0, -signal.SIGTERM) and '"event": "drained"' in self.log_path.read_text()
