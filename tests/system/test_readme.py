"""The README's quickstart works as written: its curl lines, run verbatim with bash against a real
`dynaqa serve` process on the shipped checkpoint, get the answers the README says they get.

The README's lines read the port from `DYNAQA_PORT` (default 8000, the server's own default and the
variable the server reads), so this test runs the server on a free port and sets that variable:
the one thing it substitutes. Everything else (address, headers, body) is the README's text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.processes import Server
from service.settings import Settings
from tests.conftest import REPO, SERVED_CHECKPOINT

README = REPO / "README.md"
MARKER = "<!-- quickstart: tests/system/test_readme.py runs every curl line of the next block verbatim -->"
CALLS_MARKER = "<!-- calls: tests/system/test_readme.py runs every curl line of the next block verbatim -->"
ADDRESS = "http://127.0.0.1:${DYNAQA_PORT:-8000}"


def quickstart_commands(marker: str = MARKER) -> list[str]:
    """The curl commands of the fenced bash block after `marker`, continuation lines joined."""
    text = README.read_text()
    assert marker in text, f"README.md lost its marker: {marker}"
    block = re.search(r"```bash\n(.*?)\n```", text.split(marker, 1)[1], re.DOTALL)
    assert block is not None, f"no ```bash block after {marker}"
    commands, current = [], ""
    for line in block.group(1).splitlines():
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip() and not current.lstrip().startswith("#"):
                commands.append(current.strip())
            current = ""
    return [c for c in commands if c.startswith("curl ")]


def split_response(output: str) -> tuple[int | None, dict[str, str], str]:
    """(status, headers, body) of curl's output; status None and no headers without `-i`."""
    if not output.startswith("HTTP/"):
        return None, {}, output
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_the_quickstart_block_calls_the_documented_address() -> None:
    """The lines are there, and their default address is the server's default (127.0.0.1:8000)."""
    commands = quickstart_commands()
    defaults = Settings.model_fields
    assert ADDRESS == f"http://{defaults['host'].default}:${{DYNAQA_PORT:-{defaults['port'].default}}}"
    assert any("/v1/qa" in c for c in commands) and all(ADDRESS in c for c in commands)
    posts = [c for c in commands if " -d " in c]
    assert posts and all("Content-Type: application/json" in c for c in posts)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, latency_cache: Path) -> Iterator[Server]:
    """`dynaqa serve` as the README starts it (`make serve` runs it with no flags): default settings
    but the port, and the suite's latency cache so a run calibrates once."""
    process = Server(SERVED_CHECKPOINT, tmp_path_factory.mktemp("readme") / "log.jsonl", cache_dir=latency_cache)
    try:
        process.wait_ready(timeout=600)  # start-up calibrates every served sub-network
        yield process
    finally:
        assert process.stopped_cleanly()


@pytest.mark.slow
@pytest.mark.timeout(900)  # the server's start-up calibration comes first
def test_the_quickstart_curl_lines_work_verbatim(server: Server) -> None:
    answered = 0
    for command in quickstart_commands():
        run = subprocess.run(
            ["bash", "-c", command],
            env={**os.environ, "DYNAQA_PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, (command, run.stderr)
        status, headers, body = split_response(run.stdout)
        assert status in (None, 200), (command, run.stdout)
        payload = json.loads(body)
        if "/v1/qa" in command:
            assert status == 200, "the README shows the answer's status line and headers (curl -i)"
            context = json.loads(re.search(r"-d '(\{.*?\})'", command).group(1))["context"]  # type: ignore[union-attr]
            assert payload["answer"] and payload["answer"] == context[payload["start"] : payload["end"]]
            assert headers["x-subnet"] == payload["subnet"]["id"] and "server-timing" in headers
            answered += 1
        elif "/v2/health/ready" in command:
            assert payload["ready"] is True
        elif "/v1/model" in command:
            assert payload["subnets"]
    assert answered >= 1


@pytest.mark.slow
def test_the_api_calls_work_verbatim(server: Server) -> None:
    """Every call the API section shows answers 200 with JSON, as written."""
    commands = quickstart_commands(CALLS_MARKER)
    assert commands and all(ADDRESS in c for c in commands)
    for command in commands:
        run = subprocess.run(
            ["bash", "-c", command + " -w '\\n%{http_code}'"],
            env={**os.environ, "DYNAQA_PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        body, _, status = run.stdout.rpartition("\n")
        assert run.returncode == 0 and status == "200", (command, run.stdout, run.stderr)
        assert json.loads(body), command
