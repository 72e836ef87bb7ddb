"""The HTTP API through TestClient(create_app(...)), which runs the real lifespan (tiny model)."""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.engine.executor import Executor
from service.runtime import Runtime
from service.settings import Settings

CONTEXT = "The Eiffel Tower was completed in 1889 in Paris. It was designed by Gustave Eiffel's company."


@pytest.fixture(scope="module")
def client(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        checkpoint=tiny_checkpoint,
        cache_dir=tmp_path_factory.mktemp("cache"),
        max_context_chars=2000,
        max_body_bytes=8192,
        min_budget_ms=0.001,  # the tiny model is fast: let a 0.01 ms budget stay below its floor
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def wait_ready(client: TestClient) -> None:
    """Start-up runs in the background; readiness says when it is done (120 s at most: compiling
    the layer step takes 10-30 s of it on two busy cores)."""
    for _ in range(2400):
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("not ready after 120 s")


def ask(client: TestClient, headers: dict[str, str] | None = None, **body: object) -> object:
    payload = {"question": "When was the tower completed?", "context": CONTEXT, **body}
    return client.post("/v1/qa", json=payload, headers=headers or {})


def test_answer_has_the_contract_fields_and_headers(client: TestClient) -> None:
    response = ask(client, {"X-Latency-Budget-Ms": "5000", "X-Request-Id": "abc-123"})
    assert response.status_code == 200  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {
        "answer",
        "answers",
        "score",
        "start",
        "end",
        "subnet",
        "expected_f1",
        "latency_ms",
        "budget_ms",
        "budget_met",
    }
    assert CONTEXT[body["start"] : body["end"]] == body["answer"]
    assert body["budget_ms"] == 5000 and body["budget_met"] is True
    assert body["subnet"]["id"] == "w100d100"  # a loose budget gets the full model
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["x-subnet"] == "w100d100" and headers["x-budget-met"] == "true"
    assert headers["x-request-id"] == "abc-123"
    assert "queue;dur=" in headers["server-timing"] and "model;dur=" in headers["server-timing"]


def test_prefer_wait_is_applied_and_reported(client: TestClient) -> None:
    response = ask(client, {"Prefer": "wait=3"})
    assert response.json()["budget_ms"] == 3000  # type: ignore[attr-defined]
    assert response.headers["preference-applied"] == "wait=3"  # type: ignore[attr-defined]
    assert len(response.headers["x-request-id"]) == 32  # type: ignore[attr-defined]


def test_strict_budget_below_the_floor_is_400_naming_it(client: TestClient) -> None:
    response = ask(client, {"X-Latency-Budget-Ms": "0.01", "Prefer": "handling=strict"})
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert "needs for this input" in response.json()["error"]["message"]  # type: ignore[attr-defined]


def test_every_plan_leaves_the_network_its_allowance(client: TestClient) -> None:
    """A strict budget the fastest sub-network would fit on its own, but not with the 2 ms the
    caller's network and HTTP stack take from it, is refused as below the floor."""
    message = ask(client, {"X-Latency-Budget-Ms": "0.01", "Prefer": "handling=strict"}).json()["error"]["message"]  # type: ignore[attr-defined]
    assert "plus 2 ms for the network" in message
    bare_floor_ms = float(message.split("on an idle server, ")[1].split(" ms")[0])
    inside = ask(client, {"X-Latency-Budget-Ms": f"{bare_floor_ms + 1:.3f}", "Prefer": "handling=strict"})
    assert inside.status_code == 400  # type: ignore[attr-defined]
    clear = ask(client, {"X-Latency-Budget-Ms": f"{bare_floor_ms * 3 + 50:.3f}", "Prefer": "handling=strict"})
    assert clear.status_code == 200  # type: ignore[attr-defined]


def test_model_info_lists_what_the_planner_chooses_from(client: TestClient) -> None:
    """The tiny checkpoint ships no searched front: the width x depth grid, the full model first,
    and a loose budget gets that first sub-network."""
    info = client.get("/v1/model").json()
    planner = client.app.state.runtime.planner  # type: ignore[attr-defined]
    assert info["front"] == "width x depth grid" and info["level"] == client.app.state.runtime.level  # type: ignore[attr-defined]
    assert info["checkpoint"] == "tiny" and info["int8"] is False
    assert [s["id"] for s in info["subnets"]] == [c.subnet.id for c in planner.served]
    assert info["subnets"][0]["id"] == "w100d100" and info["subnets"][0]["role"] == "candidate"
    assert all(s["macs"] > 0 for s in info["subnets"])
    assert ask(client, {"X-Latency-Budget-Ms": "5000"}).json()["subnet"]["id"] == "w100d100"  # type: ignore[attr-defined]


def test_a_pinned_replica_says_so(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = Settings(checkpoint=tiny_checkpoint, cache_dir=tmp_path, pin_subnet="w50d75")
    with TestClient(create_app(settings)) as pinned:
        wait_ready(pinned)
        info = pinned.get("/v1/model").json()
    assert info["front"] == "pinned" and [s["id"] for s in info["subnets"]] == ["w50d75"]


def test_model_info_is_503_until_calibrated(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Without its lifespan the app never calibrates: the model endpoint says so, with Retry-After."""
    settings = Settings(checkpoint=tiny_checkpoint, cache_dir=tmp_path)
    response = TestClient(create_app(settings)).get("/v1/model")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "calibrating" in response.json()["error"]["message"]


def test_lenient_impossible_budget_gets_the_fastest_answer(client: TestClient) -> None:
    """It gets the sub-network the strict refusal names as the quickest for this input."""
    misses = client.app.state.runtime.outcomes.misses  # type: ignore[attr-defined]
    refusal = ask(client, {"X-Latency-Budget-Ms": "0.01", "Prefer": "handling=strict"})
    message = refusal.json()["error"]["message"]  # type: ignore[attr-defined]
    quickest = message.split("sub-network (")[1].split(")")[0]
    tokens = int(message.split("for this input (")[1].split(" tokens")[0])
    planner = client.app.state.runtime.planner  # type: ignore[attr-defined]
    assert quickest == min(planner.served, key=lambda c: planner.tail_s(c, tokens)).subnet.id
    response = ask(client, {"X-Latency-Budget-Ms": "0.01"})
    body = response.json()  # type: ignore[attr-defined]
    assert response.status_code == 200 and body["budget_met"] is False  # type: ignore[attr-defined]
    assert body["subnet"]["id"] == quickest
    # a budget below the idle floor is the caller's choice, not load: the controller ignores it
    assert client.app.state.runtime.outcomes.misses == misses  # type: ignore[attr-defined]


def test_a_streamed_oversize_body_is_413(client: TestClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"question": "q", "context": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/v1/qa", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "exceeds" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"json": {"question": "q"}}, 422, "context"),
        ({"json": {"question": 5, "context": "c"}}, 422, "question"),
        ({"json": {"question": "   ", "context": CONTEXT}}, 422, "question"),
        ({"json": {"question": "q", "context": "x" * 3000}}, 413, "context"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "body"),
        ({"content": b"x" * 10_000, "headers": {"content-type": "application/json"}}, 413, "exceeds"),
        ({"json": {"question": "q", "context": CONTEXT}, "headers": {"X-Latency-Budget-Ms": "-1"}}, 400, "X-Latency"),
        ({"json": {"question": "q", "context": CONTEXT, "extra": 1}}, 422, "extra"),
    ],
)
def test_bad_requests_get_clear_errors(client: TestClient, kwargs: dict, status: int, needle: str) -> None:
    response = client.post("/v1/qa", **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True, "draining": False, "calibration": "measured"}
    assert client.get("/docs").status_code == 200
    assert "/v1/qa" in client.get("/openapi.json").json()["paths"]


def test_metrics_parse_and_count(client: TestClient) -> None:
    ask(client, {"X-Latency-Budget-Ms": "2000"})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    for name in (
        "dynaqa_request_duration_seconds",
        "dynaqa_requests",
        "dynaqa_budget",
        "dynaqa_queue_depth",
        "dynaqa_degradation_level",
        "dynaqa_subnet_requests",
        "dynaqa_batch_size",
        "dynaqa_load_downgrades",
    ):
        assert name in families, name
    # requests one at a time on an idle server: load downgraded none of them
    assert [s.value for s in families["dynaqa_load_downgrades"].samples if s.name.endswith("_total")] == [0.0]
    ok = [
        s.value
        for s in families["dynaqa_requests"].samples
        if s.labels.get("outcome") == "ok" and s.name.endswith("_total")
    ]
    assert ok and ok[0] >= 1
    buckets = {s.labels["le"] for s in families["dynaqa_request_duration_seconds"].samples if "le" in s.labels}
    for threshold in ("0.05", "0.1", "0.2", "0.3", "0.5", "1.0"):  # an edge exactly at each SLO threshold
        assert threshold in buckets


def test_the_plan_margin_learns_when_the_response_was_sent(client: TestClient) -> None:
    """One sample per answer, taken once its last byte went out: after the model was done."""
    margin = client.app.state.runtime.planner.margin  # type: ignore[attr-defined]
    began = time.perf_counter()
    body = ask(client, {"X-Latency-Budget-Ms": "5000"}).json()  # type: ignore[attr-defined]
    ended = time.perf_counter()
    when, _ = margin.samples[-1]
    assert began + body["latency_ms"] / 1000 <= when <= ended


def test_a_full_queue_is_refused_before_the_body_is_read(client: TestClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    shed_before, limit = runtime.outcomes.shed, runtime.engine.scheduler.max_queue
    runtime.engine.scheduler.max_queue = 0  # every slot taken, as under overload
    try:
        # not even JSON: a 503 rather than a 422 shows the refusal came before any parsing
        response = client.post(
            "/v1/qa", content=b"{not json", headers={"content-type": "application/json", "X-Request-Id": "shed-1"}
        )
    finally:
        runtime.engine.scheduler.max_queue = limit
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {"type": "overloaded", "message": "queue full"}
    assert int(response.headers["Retry-After"]) >= 1 and response.headers["X-Request-Id"] == "shed-1"
    assert runtime.outcomes.shed == shed_before + 1
    assert ask(client, {"X-Latency-Budget-Ms": "5000"}).status_code == 200  # type: ignore[attr-defined]


@pytest.mark.slow  # compiles the layer steps: 10-30 s on two idle cores, minutes on busy ones
def test_every_torch_call_runs_on_the_one_model_thread(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading, calibration, warm-up and serving share the executor's model thread: libgomp gives
    every thread that computes a team of its own, and with more OpenMP threads than cores its
    workers sleep between parallel regions (INT8 served 2.2-3.7x slower than calibrated;
    `benchmarks/model_thread.py`)."""
    threads: dict[str, set[str]] = {}
    for owner, name in ((Runtime, "load"), (Runtime, "calibrate"), (Runtime, "_warm"), (Executor, "_forward")):
        original: Callable[..., object] = getattr(owner, name)

        def recorded(
            self: object, *args: object, _name: str = name, _original: Callable[..., object] = original
        ) -> object:
            threads.setdefault(_name, set()).add(threading.current_thread().name)
            return _original(self, *args)

        monkeypatch.setattr(owner, name, recorded)
    settings = Settings(checkpoint=tiny_checkpoint, cache_dir=tmp_path, min_budget_ms=0.001, compile=True)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert ask(client).status_code == 200  # type: ignore[attr-defined]
    assert set(threads) == {"load", "calibrate", "_warm", "_forward"}
    names = set().union(*threads.values())
    assert len(names) == 1 and names.pop().startswith("dynaqa-model"), threads


def test_a_bad_body_is_422_before_a_bad_budget_header_is_400(client: TestClient) -> None:
    response = client.post("/v1/qa", json={"question": "q"}, headers={"X-Latency-Budget-Ms": "-1"})
    assert response.status_code == 422 and "context" in response.json()["error"]["message"]
    assert ask(client, {"X-Latency-Budget-Ms": "-1"}).status_code == 400  # type: ignore[attr-defined]


def batch_count(client: TestClient) -> float:
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    return next(s.value for s in families["dynaqa_batch_size"].samples if s.name.endswith("_count"))


QUESTIONS = ["When was the tower completed?", "Who designed it?", "Where is the tower?"]


def test_a_batch_is_answered_in_order_as_the_single_calls(client: TestClient) -> None:
    singles = [ask(client, {"X-Latency-Budget-Ms": "5000"}, question=q).json()["answer"] for q in QUESTIONS]  # type: ignore[attr-defined]
    body = {"questions": [{"question": q, "context": CONTEXT} for q in QUESTIONS]}
    response = client.post("/v1/qa", json=body, headers={"X-Latency-Budget-Ms": "5000"})
    assert response.status_code == 200
    batch = response.json()
    assert [r["answer"] for r in batch["results"]] == singles
    assert batch["budget_ms"] == 5000 and batch["budget_met"] is True
    assert response.headers["X-Budget-Met"] == "true" and response.headers["X-Subnet"]


def test_top_k_answers_are_distinct_spans_best_first(client: TestClient) -> None:
    body = ask(client, top_k=3).json()  # type: ignore[attr-defined]
    spans = [(a["start"], a["end"]) for a in body["answers"]]
    assert 1 <= len(spans) <= 3 and len(set(spans)) == len(spans)
    assert body["answers"][0] == {k: body[k] for k in ("answer", "score", "start", "end")}
    assert all(CONTEXT[a["start"] : a["end"]] == a["answer"] for a in body["answers"])


def test_the_hugging_face_payload_is_answered_in_its_shape(client: TestClient) -> None:
    pair = {"question": "Who designed it?", "context": CONTEXT}
    one = client.post("/v1/qa", json={"inputs": pair}).json()
    assert set(one) == {"answer", "score", "start", "end"} and CONTEXT[one["start"] : one["end"]] == one["answer"]
    assert one["answer"] == ask(client, question="Who designed it?").json()["answer"]  # type: ignore[attr-defined]
    listed = client.post("/v1/qa", json={"inputs": [pair, pair]}).json()
    assert [span(a) for a in listed] == [span(one), span(one)]
    top = client.post("/v1/qa", json={"inputs": pair, "parameters": {"top_k": 2}}).json()
    assert isinstance(top, list) and span(top[0]) == span(one)
    nested = client.post("/v1/qa", json={"inputs": [pair], "parameters": {"top_k": 2}}).json()
    assert [[span(a) for a in answers] for answers in nested] == [[span(a) for a in top]]


def span(answer: dict) -> tuple:  # type: ignore[type-arg]
    """What must match between calls: batched forwards pad differently, so scores agree to ~1e-6."""
    return answer["answer"], answer["start"], answer["end"], round(answer["score"], 4)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"questions": []}, 422, "questions"),
        ({"inputs": []}, 422, "inputs"),
        ({"question": "q?", "context": CONTEXT, "top_k": 0}, 422, "top_k"),
        ({"inputs": {"question": "q?", "context": CONTEXT}, "parameters": {"doc_stride": 5}}, 422, "doc_stride"),
        ({"questions": [{"question": "q?", "context": CONTEXT}] * 65}, 413, "the limit is 64"),
        (
            {
                "questions": [{"question": "q?", "context": "x" * 1900}] * 2
                + [{"question": "q?", "context": "x" * 3000}]
            },
            413,
            "3000",
        ),
    ],
)
def test_bad_batches_are_refused_and_nothing_is_computed(
    client: TestClient,
    body: dict,  # type: ignore[type-arg]
    status: int,
    needle: str,
) -> None:
    before = batch_count(client)
    response = client.post("/v1/qa", json=body)
    assert response.status_code == status and needle in response.text
    assert batch_count(client) == before
