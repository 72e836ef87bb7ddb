"""API-key authentication against a real `dynaqa serve`: keys from a file (with a revocation while it
runs) and inline, the open paths, refusals that queue and count nothing, the fail-closed start-up,
and a fuzz run with the right key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from loadtest.processes import Server
from tests.conftest import Serve
from tests.system.test_readme import quickstart_commands
from tests.system.test_reliability import SCHEMA, ieee_floats  # noqa: F401  (an autouse fixture)

AUTH_MARKER = (
    "<!-- auth: tests/system/test_auth.py runs every curl line of the next block verbatim, with DYNAQA_API_KEY set -->"
)
QUESTION = {"question": "Who wrote it?", "context": "The book was written by Ada Lovelace in 1843."}
KEYS = ("key-one-7f3a", "key-two-91bc")
INFER = "/v2/models/dynaqa/infer"
CLOSED = ("/v1/qa", "/v1/model", "/v2", "/v2/models/dynaqa", INFER)
INFER_BODY = {
    "inputs": [
        {"name": name, "datatype": "BYTES", "shape": [1], "data": [QUESTION[name]]} for name in ("question", "context")
    ]
}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "keys"
    path.write_text(f"# rotation: both keys valid until the old one is removed\n{KEYS[0]}\n\n{KEYS[1]}\n")
    return path


@pytest.fixture(scope="module")
def server(serve: Serve, keys_file: Path) -> Iterator[Server]:
    with serve(api_keys=keys_file, max_queue=16) as process:
        yield process


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def call(server: Server, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST the question to /v1/qa and to the OIP infer path, GET anything else."""
    if path in ("/v1/qa", INFER):
        body = QUESTION if path == "/v1/qa" else INFER_BODY
        return httpx.post(server.url + path, json=body, headers=headers, timeout=60)
    return httpx.get(server.url + path, headers=headers, timeout=60)


def counters(server: Server) -> dict[str, float]:
    """The question and batch counters a refusal must not move, and the refusals counted."""
    totals = {"requests": 0.0, "batches": 0.0, "unauthorized": 0.0}
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dynaqa_requests_total":
                totals["requests"] += sample.value
            elif sample.name == "dynaqa_batch_size_count":
                totals["batches"] += sample.value
            elif sample.name == "dynaqa_unauthorized_total":
                totals["unauthorized"] += sample.value
    return totals


def assert_refused(response: httpx.Response, path: str, invalid: bool) -> None:
    assert response.status_code == 401, (path, response.text)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="dynaqa"') and ('error="invalid_token"' in challenge) == invalid
    assert response.headers["X-Request-Id"]
    error = response.json()["error"]
    if path.startswith("/v2"):  # the Open Inference Protocol's shape
        assert isinstance(error, str) and error
    else:
        assert error["type"] == "unauthorized" and error["message"]


@pytest.mark.slow
def test_either_key_is_answered(server: Server) -> None:
    for key in KEYS:
        answered = call(server, "/v1/qa", bearer(key))
        assert answered.status_code == 200, answered.text
        assert "Ada Lovelace" in answered.json()["answer"]
        assert call(server, "/v1/model", bearer(key)).status_code == 200
        inferred = call(server, INFER, bearer(key))
        assert inferred.status_code == 200, inferred.text
        assert {o["name"] for o in inferred.json()["outputs"]} == {"answer", "score", "start", "end"}


@pytest.mark.slow
def test_the_readme_auth_call_works_verbatim_with_a_key_and_not_without(server: Server) -> None:
    commands = quickstart_commands(AUTH_MARKER)
    assert commands and all("Authorization: Bearer ${DYNAQA_API_KEY}" in c for c in commands)
    for command in commands:
        for key, status in ((KEYS[0], "200"), ("revoked-or-wrong", "401")):
            run = subprocess.run(
                ["bash", "-c", command + " -w '\\n%{http_code}'"],
                env={**os.environ, "DYNAQA_PORT": str(server.port), "DYNAQA_API_KEY": key},
                capture_output=True,
                text=True,
                timeout=60,
            )
            body, _, got = run.stdout.rpartition("\n")
            assert run.returncode == 0 and got == status, (command, run.stdout, run.stderr)
            assert json.loads(body), command


@pytest.mark.slow
def test_probes_metrics_and_docs_need_no_key(server: Server) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json", "/docs"):
        assert call(server, path).status_code == 200, path


@pytest.mark.slow
def test_a_missing_or_wrong_key_is_refused_and_counts_no_question(server: Server) -> None:
    before = counters(server)
    attempts = [None, bearer("not-a-key"), bearer(KEYS[0] + "x"), {"Authorization": f"Basic {KEYS[0]}"}]
    for headers in attempts:
        for path in CLOSED:
            invalid = headers is not None and headers["Authorization"].startswith("Bearer")
            assert_refused(call(server, path, headers), path, invalid)
    after = counters(server)
    assert after["requests"] == before["requests"] and after["batches"] == before["batches"]
    assert after["unauthorized"] - before["unauthorized"] == len(attempts) * len(CLOSED)
    log = server.log_path.read_text()
    assert '"event": "unauthorized"' in log and '"reason": "invalid"' in log and '"reason": "missing"' in log
    assert not any(key in log for key in (*KEYS, "not-a-key"))  # a key is never logged, right or wrong


@pytest.mark.slow
def test_a_revoked_key_is_refused_without_a_restart(server: Server, keys_file: Path) -> None:
    original = keys_file.read_text()
    assert call(server, "/v1/model", bearer(KEYS[0])).status_code == 200
    keys_file.write_text(f"{KEYS[1]}\n")
    try:
        time.sleep(1.2)
        before = counters(server)
        for path in CLOSED:
            assert_refused(call(server, path, bearer(KEYS[0])), path, invalid=True)
        after = counters(server)
        assert after["requests"] == before["requests"] and after["batches"] == before["batches"]
        assert call(server, "/v1/qa", bearer(KEYS[1])).status_code == 200  # the kept key still works
    finally:
        keys_file.write_text(original)
        time.sleep(1.2)
    assert call(server, "/v1/model", bearer(KEYS[0])).status_code == 200  # put back: accepted again


@pytest.mark.slow
@SCHEMA.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_with_the_key_finds_no_server_error(case: schemathesis.Case, server: Server) -> None:
    response = case.call(base_url=server.url, headers=bearer(KEYS[0]), timeout=60)
    assert response.status_code < 500 or response.status_code in (503, 504), response.text
    assert response.status_code != 401, response.text


@pytest.mark.slow
def test_inline_keys_work(serve: Serve) -> None:
    with serve(api_keys=f"{KEYS[0]},{KEYS[1]}") as server:
        assert call(server, "/v1/qa", bearer(KEYS[1])).status_code == 200
        assert_refused(call(server, "/v1/qa"), "/v1/qa", invalid=False)
        assert_refused(call(server, "/v1/qa", bearer(f"{KEYS[0]},{KEYS[1]}")), "/v1/qa", invalid=True)


@pytest.mark.slow
def test_a_configured_but_missing_keys_file_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "secret" / "keys"
    env = {**os.environ, "DYNAQA_API_KEYS": str(missing), "DYNAQA_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert f"DYNAQA_API_KEYS names {missing}, which cannot be read" in result.stderr
