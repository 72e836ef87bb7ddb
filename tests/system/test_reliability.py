"""Reliability and security against a real `dynaqa serve` over HTTP: fuzzing, a bad-input corpus,
overload, faults (bad checkpoint, disconnecting clients) and a graceful drain under load."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from loadtest import openloop, overload
from loadtest.processes import Server
from models.data import squad
from service.app import create_app
from service.settings import Settings
from tests.conftest import DATA, SERVED_CHECKPOINT, Serve, most_accurate_id

CONTEXT = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy."
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def server(serve: Serve) -> Iterator[Server]:
    with serve(max_queue=16) as process:
        yield process


@pytest.fixture(autouse=True)
def ieee_floats() -> Iterator[None]:
    """Hypothesis needs subnormal floats; loading a model in this process turned on flush-to-zero."""
    import torch

    torch.set_flush_denormal(False)
    yield


@pytest.mark.slow
@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_finds_no_server_error(case: schemathesis.Case, server: Server) -> None:
    response = case.call(base_url=server.url, timeout=60)
    assert response.status_code < 500 or response.status_code in (503, 504), response.text
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        if case.path.startswith("/v2"):  # the Open Inference Protocol's shape: the message alone
            assert isinstance(error, str) and error
        else:
            assert error["type"] and error["message"]


def send(server: Server, body: bytes | dict, headers: dict[str, str] | None = None) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(server.url + "/v1/qa", json=body, headers=headers or {}, timeout=60)
    return httpx.post(
        server.url + "/v1/qa", content=body, headers={"content-type": "application/json", **(headers or {})}, timeout=60
    )


CORPUS = [
    ("malformed JSON", b'{"question": "x", "context": ', {}, 422, "not valid JSON"),
    ("wrong types", {"question": ["a"], "context": 3}, {}, 422, "question"),
    ("missing field", {"context": CONTEXT}, {}, 422, "question"),
    ("unknown field", {"question": "q", "context": CONTEXT, "admin": True}, {}, 422, "admin"),
    ("huge body", b'{"question": "q", "context": "' + b"a" * 2_000_000 + b'"}', {}, 413, "exceeds"),
    ("1 MB context", {"question": "q", "context": "word " * 200_000}, {}, 413, ""),
    ("invalid UTF-8", b'{"question": "\xff\xfe", "context": "abc"}', {}, 422, "UTF-8"),
    ("NUL character", {"question": "who\x00?", "context": CONTEXT}, {}, 422, "NUL"),
    ("blank question", {"question": " \t\n", "context": CONTEXT}, {}, 422, "question"),
    ("negative budget", {"question": "q", "context": CONTEXT}, {"X-Latency-Budget-Ms": "-10"}, 400, "positive"),
    ("zero budget", {"question": "q", "context": CONTEXT}, {"X-Latency-Budget-Ms": "0"}, 400, "positive"),
    ("NaN budget", {"question": "q", "context": CONTEXT}, {"X-Latency-Budget-Ms": "NaN"}, 400, "finite"),
    ("text budget", {"question": "q", "context": CONTEXT}, {"X-Latency-Budget-Ms": "fast"}, 400, "number"),
    ("bad grpc-timeout", {"question": "q", "context": CONTEXT}, {"grpc-timeout": "1 second"}, 400, "grpc-timeout"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "body", "headers", "status", "needle"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_gets_the_documented_status(
    server: Server, name: str, body, headers, status: int, needle: str
) -> None:  # type: ignore[no-untyped-def]
    response = send(server, body, headers)
    assert response.status_code == status, response.text[:300]
    assert needle in response.json()["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "question", "context", "headers"),
    [
        ("control characters", "who\x07 gave\x1b the name?", CONTEXT, {}),
        ("right-to-left text", "מי נתן את השם?", "הנורמנים נתנו את שמם לנורמנדי. " + CONTEXT, {}),
        ("emoji", "Who 👑 gave the name? 🤔", CONTEXT + " 🏰", {}),
        ("no overlap", "What is the boiling point of mercury?", CONTEXT, {}),
        ("1e308 budget is clamped", "Who gave the name?", CONTEXT, {"X-Latency-Budget-Ms": "1e308"}),
    ],
)
def test_odd_but_valid_input_is_answered(server: Server, name: str, question: str, context: str, headers: dict) -> None:  # type: ignore[type-arg]
    response = send(server, {"question": question, "context": context}, headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert context[body["start"] : body["end"]] == body["answer"]


def test_no_admin_or_file_endpoints() -> None:
    paths = set(create_app(Settings()).openapi()["paths"])
    model = "/v2/models/{name}"
    versioned = [model, model + "/versions/{version}"]
    oip = {"/v2", *versioned, *(p + "/ready" for p in versioned), *(p + "/infer" for p in versioned)}
    assert paths == {"/v1/qa", "/v1/model", "/v2/health/live", "/v2/health/ready", "/metrics", *oip}


@pytest.mark.slow
def test_overload_is_refused_fast_bounded_and_recovers(server: Server) -> None:
    # 10x, at most 600 requests a second: with the fused kernels the full model's capacity reads up
    # to 90 req/s, and this test's generator, sharing two cores with the server, then saw its own
    # requests fail unsent (status 0) in one CI run.
    report = overload.measure(server.url, server.process.pid, factor=10, seconds=30, max_rps=600)
    assert report["process_alive"]
    assert set(report["statuses"]) <= {200, 503, 504}, (report["statuses"], report["client_errors"])
    assert report["statuses"].get(503, 0) > 0
    assert report["refusals_with_retry_after"] == report["statuses"][503]
    assert not report["client_errors"], report
    assert report["refusal_ms_p99_at_most"] is not None
    assert report["queue_depth_max_seen"] <= 16
    assert report["rss_mib_peak"] < 2048, report  # well inside the pod's 2.5 GiB memory limit
    assert report["after_recovery_subnet"] == most_accurate_id(server.url)
    print(json.dumps(report))


@pytest.mark.slow
def test_a_disconnected_client_is_not_computed(server: Server) -> None:
    examples = squad.load_squad(DATA / "eval.json.gz", limit=40)
    long = max(examples, key=lambda e: len(e.context))

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"question": long.question, "context": long.context}
            busy = [  # 12 windows: a full micro-batch of 8 runs while the last request waits behind it
                client.post(server.url + "/v1/qa", json=body, headers={"X-Latency-Budget-Ms": "20000"})
                for _ in range(12)
            ]
            tasks = [asyncio.ensure_future(b) for b in busy]
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.ReadTimeout):  # gives up while its request waits in the queue
                await client.post(
                    server.url + "/v1/qa", json=body, headers={"X-Latency-Budget-Ms": "20000"}, timeout=0.05
                )
            await asyncio.gather(*tasks)

    before = metrics(server)
    asyncio.run(scenario())
    time.sleep(0.5)
    after = metrics(server)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["computed"] - before["computed"] == 12  # only the twelve that waited were computed


def metrics(server: Server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    values = {"cancelled": 0.0, "computed": 0.0}
    for line in text.splitlines():
        if line.startswith('dynaqa_requests_total{outcome="cancelled"}'):
            values["cancelled"] = float(line.split()[-1])
        if line.startswith("dynaqa_batch_size_sum "):
            values["computed"] = float(line.split()[-1])
    return values


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["corrupt weights", "missing checkpoint"])
def test_a_bad_checkpoint_exits_non_zero_and_is_never_ready(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "ckpt"
    if damage == "corrupt weights":
        shutil.copytree(SERVED_CHECKPOINT, root)
        (root / "model.safetensors").write_bytes(b"\x00" * 1024)
    env = {**os.environ, "DYNAQA_CHECKPOINT": str(root), "DYNAQA_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert ("is corrupt" if damage == "corrupt weights" else "does not exist") in result.stderr


@pytest.mark.slow
def test_sigterm_under_load_drains_without_losing_requests(serve: Serve) -> None:
    # The linger outlasts the load, as a load balancer stops sending during a preStop pause: a
    # server that closes idle keep-alive connections while clients still send would race them.
    with serve(max_queue=64, drain_linger_s=6.0) as server:
        examples = squad.load_squad(DATA / "eval.json.gz", limit=100)
        readiness: list[int] = []

        async def scenario() -> list[openloop.Record]:
            load = asyncio.ensure_future(openloop.run(server.url, examples, 15, 6, lambda rng: 5000.0))
            await asyncio.sleep(2.0)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
            try:
                async with httpx.AsyncClient() as client:
                    readiness.append((await client.get(server.url + "/v2/health/ready", timeout=2)).status_code)
            except httpx.HTTPError:
                readiness.append(0)  # not even listening any more: not ready either
            return await load

        began = time.perf_counter()
        records = asyncio.run(scenario())
        server.process.wait(timeout=60)
        assert time.perf_counter() - began < 40  # the pod's grace period
        assert readiness and readiness[0] != 200
        lost = [r for r in records if r.status == 0 and r.error not in ("ConnectError",)]
        assert not lost, [(r.sent_at, r.error) for r in lost]  # every request was answered or refused at connect
        answered = [r for r in records if r.status == 200]
        assert any(r.sent_at > 2.0 for r in answered)  # sent after the signal, during the linger
        refused = [r for r in records if r.status == 0 or r.status == 503]
        assert answered and len(answered) + len(refused) == len(records)


@pytest.mark.slow
def test_a_lingering_replica_is_unready_but_answers_until_a_second_signal(serve: Serve) -> None:
    with serve(drain_linger_s=120.0) as server:
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(server.url + "/v2/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["draining"] is True
        body = {"question": "Who wrote it?", "context": "The book was written by Ada Lovelace in 1843."}
        answer = httpx.post(server.url + "/v1/qa", json=body, timeout=30)
        assert answer.status_code == 200 and answer.json()["answer"]
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises the signal it handled
