"""The Open Inference Protocol on a real `dynaqa serve`: tritonclient's HTTP client (binary tensors
and JSON) reads the same answers as /v1/qa, and raw requests get the protocol's errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from loadtest.processes import Server
from models.data import squad
from tests.conftest import DATA, Serve

pytestmark = pytest.mark.slow

EXAMPLES = squad.load_squad(DATA / "eval.json.gz", limit=4)
BUDGET_MS = 5000
MAX_QUEUE = 8


@pytest.fixture(scope="module")
def server(serve: Serve) -> Iterator[Server]:
    """Pinned to the float full model, so a batch and single calls are answered alike: padding a
    window beside longer ones moves float logits by rounding only, while an INT8 sub-network's
    per-token rounding can flip on such a change and move a score by a few thousandths."""
    with serve(pin_subnet="w100d100", max_queue=MAX_QUEUE) as process:
        yield process


@pytest.fixture(scope="module")
def model(server: Server) -> str:
    return str(httpx.get(server.url + "/v1/model", timeout=10).json()["checkpoint"])


@pytest.fixture(scope="module")
def expected(server: Server) -> list[dict]:
    """What /v1/qa answers for each example, one call each."""
    answers = []
    for e in EXAMPLES:
        response = httpx.post(
            server.url + "/v1/qa",
            json={"question": e.question, "context": e.context},
            headers={"X-Latency-Budget-Ms": str(BUDGET_MS)},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)


def tensors(binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name in ("question", "context"):
        texts = np.array([getattr(e, name) for e in EXAMPLES], dtype=object)
        tensor = triton.InferInput(name, [len(EXAMPLES)], "BYTES")
        tensor.set_data_from_numpy(texts, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_reads_health_and_metadata(server: Server, model: str) -> None:
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(model) and c.is_model_ready("dynaqa") and c.is_model_ready(model, "1")
    assert not c.is_model_ready("no-such-model")
    meta = c.get_server_metadata()
    assert meta["name"] == "dynaqa" and "binary_tensor_data" in meta["extensions"]
    model_meta = c.get_model_metadata("dynaqa")
    assert model_meta["name"] == model and model_meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"]) for t in model_meta["inputs"]] == [("question", "BYTES"), ("context", "BYTES")]
    assert [t["name"] for t in model_meta["outputs"]] == ["answer", "score", "start", "end"]


def assert_same_answers(result: triton.InferResult, expected: list[dict]) -> None:
    answers = [a.decode() if isinstance(a, bytes) else a for a in result.as_numpy("answer")]
    assert answers == [e["answer"] for e in expected]
    assert result.as_numpy("start").tolist() == [e["start"] for e in expected]
    assert result.as_numpy("end").tolist() == [e["end"] for e in expected]
    assert result.as_numpy("score").tolist() == pytest.approx([e["score"] for e in expected], abs=1e-4)


def test_tritonclient_binary_infer_answers_as_v1(server: Server, model: str, expected: list[dict]) -> None:
    result = client(server).infer(model, tensors(binary=True), parameters={"latency_budget_ms": BUDGET_MS})
    assert_same_answers(result, expected)
    response = result.get_response()
    assert response["model_name"] == model and response["parameters"]["latency_budget_ms"] == BUDGET_MS
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])


def test_tritonclient_json_infer_answers_as_v1(server: Server, expected: list[dict]) -> None:
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("answer", "score", "start", "end")]
    result = client(server).infer("dynaqa", tensors(binary=False), model_version="1", outputs=outputs, request_id="r-7")
    assert_same_answers(result, expected)
    response = result.get_response()
    assert response["id"] == "r-7" and all("data" in o for o in response["outputs"])


def body(questions: list[str], contexts: list[str], datatype: str = "BYTES", **extra: object) -> dict:
    return {
        "inputs": [
            {"name": "question", "shape": [len(questions)], "datatype": datatype, "data": questions},
            {"name": "context", "shape": [len(contexts)], "datatype": datatype, "data": contexts},
        ],
        **extra,
    }


QUESTION, CONTEXT = "Who wrote it?", "The book was written by Ada Lovelace in 1843."


def infer(server: Server, payload: dict | bytes, path: str = "/v2/models/dynaqa/infer", **kw: object) -> httpx.Response:
    if isinstance(payload, bytes):
        return httpx.post(server.url + path, content=payload, timeout=60, **kw)  # type: ignore[arg-type]
    return httpx.post(server.url + path, json=payload, timeout=60, **kw)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int, says: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and says in error, error


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v2/models/nope", "GET"),
        ("/v2/models/nope/ready", "GET"),
        ("/v2/models/dynaqa/versions/2", "GET"),
        ("/v2/models/nope/infer", "POST"),
        ("/v2/models/dynaqa/versions/2/infer", "POST"),
    ],
)
def test_unknown_models_and_versions_are_404(server: Server, path: str, method: str) -> None:
    assert_error(httpx.request(method, server.url + path, json=body([QUESTION], [CONTEXT]), timeout=60), 404)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (body([QUESTION, QUESTION], [CONTEXT]), "2 questions but 1 contexts"),
        (body([QUESTION], [CONTEXT], datatype="FP32"), "BYTES"),
        ({"inputs": body([QUESTION], [CONTEXT])["inputs"][:1]}, "inputs must be exactly"),
        ({"inputs": [{**body([QUESTION], [CONTEXT])["inputs"][0], "shape": [2]}]}, "elements"),
        (body([QUESTION], [CONTEXT], outputs=[{"name": "logits"}]), "outputs"),
        (body([" "], [CONTEXT]), "white space"),
        (body([QUESTION], [CONTEXT], parameters={"latency_budget_ms": -5}), "latency_budget_ms"),
        (body([QUESTION], [CONTEXT], parameters={"latency_budget_ms": 10**400}), "latency_budget_ms"),
        (body([QUESTION], [CONTEXT], parameters={"latency_budget_ms": True}), "latency_budget_ms"),
        ({"inputs": "question"}, "inputs"),
        (b'{"inputs": [', "not valid JSON"),
    ],
)
def test_bad_requests_are_400_in_the_protocol_shape(server: Server, payload: dict | bytes, says: str) -> None:
    assert_error(infer(server, payload), 400, says)


def test_oversize_bodies_and_batches_larger_than_the_queue_are_413(server: Server) -> None:
    assert_error(infer(server, b"{" + b" " * 2_000_000 + b"}"), 413, "exceeds")
    refused = infer(server, body([QUESTION] * (MAX_QUEUE + 1), [CONTEXT] * (MAX_QUEUE + 1)))
    assert_error(refused, 413, "queues")  # it could never be queued at once: 413, not a retry


def test_the_budget_parameter_wins_over_the_headers(server: Server) -> None:
    answered = infer(
        server,
        body([QUESTION], [CONTEXT], parameters={"latency_budget_ms": 750}),
        headers={"X-Latency-Budget-Ms": "2000"},
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["parameters"]["latency_budget_ms"] == 750
    assert answered.headers["X-Subnet"] and answered.headers["X-Budget-Met"] in ("true", "false")
    from_header = infer(server, body([QUESTION], [CONTEXT]), headers={"Prefer": "wait=2"})
    assert from_header.json()["parameters"]["latency_budget_ms"] == 2000
    assert from_header.headers["Preference-Applied"] == "wait=2"


def test_requested_outputs_come_alone_and_in_order(server: Server) -> None:
    asked = body(
        [[QUESTION], [QUESTION]], [[CONTEXT], ["Ada Lovelace wrote it."]], outputs=[{"name": "end"}, {"name": "answer"}]
    )
    for tensor in asked["inputs"]:
        tensor["shape"] = [2, 1]  # nested row-major data of shape [N, 1]
    response = infer(server, asked, path="/v2/models/dynaqa/versions/1/infer")
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [o["name"] for o in outputs] == ["end", "answer"]
    assert outputs[1]["data"] == ["Ada Lovelace", "Ada Lovelace"] and outputs[1]["shape"] == [2]


def questions_counted(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    families = text_string_to_metric_families(text)
    return sum(s.value for f in families for s in f.samples if s.name == "dynaqa_requests_total")


def test_each_pair_is_counted_as_a_question(server: Server) -> None:
    before = questions_counted(server)
    assert infer(server, body([QUESTION] * 3, [CONTEXT] * 3)).status_code == 200
    assert infer(server, body([QUESTION], [CONTEXT], datatype="INT64")).status_code == 400
    assert questions_counted(server) - before == 4
