"""Batches and the Hugging Face payload on a real `dynaqa serve`, through real clients."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import InferenceClient
from prometheus_client.parser import text_string_to_metric_families

from loadtest.processes import Server
from models.data import squad
from tests.conftest import DATA, Serve

pytestmark = pytest.mark.slow

EXAMPLES = squad.load_squad(DATA / "eval.json.gz", limit=320)[::10]  # 32 questions over several articles
BUDGET = {"X-Latency-Budget-Ms": "3000"}


@pytest.fixture(scope="module")
def server(serve: Serve) -> Iterator[Server]:
    with serve() as server:
        yield server


def batches(server: Server) -> float:
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    return next(s.value for s in families["dynaqa_batch_size"].samples if s.name.endswith("_count"))


def test_a_batch_of_32_meets_its_budget_where_32_calls_do_in_fewer_model_batches(server: Server) -> None:
    before = batches(server)
    singles_met = []
    for example in EXAMPLES:
        body = {"question": example.question, "context": example.context}
        single = httpx.post(server.url + "/v1/qa", json=body, headers=BUDGET, timeout=60)
        assert single.status_code == 200, single.text
        singles_met.append(single.json()["budget_met"])
    singles = batches(server) - before
    time.sleep(2.0)  # let the controller see an idle replica again
    before = batches(server)
    body = {"questions": [{"question": e.question, "context": e.context} for e in EXAMPLES]}
    response = httpx.post(server.url + "/v1/qa", json=body, headers=BUDGET, timeout=60)
    assert response.status_code == 200, response.text
    batch = response.json()
    assert len(batch["results"]) == 32 and batch["budget_ms"] == 3000
    for example, result in zip(EXAMPLES, batch["results"], strict=True):
        assert example.context[result["start"] : result["end"]] == result["answer"]
    # The claim is relative: where the CPU let 32 single calls meet the budget, the batch meets it.
    if all(singles_met):
        assert batch["budget_met"] and batch["latency_ms"] <= 3000, batch["latency_ms"]
    assert batches(server) - before < singles == 32


def test_huggingface_hub_client_reads_the_same_answers(serve: Serve) -> None:
    """One sub-network answers both clients (pinned): an adaptive server still settling after the
    batch test above once served the two calls of a pair on different ones (same span, score 0.005 apart)."""
    with serve(pin_subnet="w100d100") as server:
        client = InferenceClient(model=server.url + "/v1/qa")
        for example in EXAMPLES[:4]:
            body = {"question": example.question, "context": example.context}
            ours = httpx.post(server.url + "/v1/qa", json=body, timeout=60).json()
            theirs = client.question_answering(question=example.question, context=example.context)
            assert (theirs.answer, theirs.start, theirs.end) == (ours["answer"], ours["start"], ours["end"])
            assert theirs.score == pytest.approx(ours["score"], abs=1e-4)
        top = client.question_answering(question=EXAMPLES[0].question, context=EXAMPLES[0].context, top_k=3)
        assert isinstance(top, list) and 1 <= len(top) <= 3 and top[0].answer
