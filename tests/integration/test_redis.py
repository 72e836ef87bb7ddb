"""Real Redis between real processes: replicas starting together keep one record, and a server
whose Redis dies and comes back never fails a request or its readiness."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_client

from loadtest.processes import Redis, Server
from models.data import squad
from service import calibration
from service.state import RedisState
from tests.conftest import DATA, Serve

pytestmark = pytest.mark.slow

EXAMPLES = squad.load_squad(DATA / "eval.json.gz", limit=400)[::10]


def post(server: Server, example: squad.SquadExample, headers: dict[str, str]) -> httpx.Response:
    body = {"question": example.question, "context": example.context}
    return httpx.post(server.url + "/v1/qa", json=body, headers=headers, timeout=60)


def test_replicas_starting_together_keep_the_first_record(redis: Redis, tmp_path: Path) -> None:
    """Two replicas found nothing and each measured: over real Redis the second claims the first's
    record and takes it; a record that is not a JSON object is replaced."""
    first, second = (RedisState(redis.url, lambda operation: None) for _ in range(2))
    assert first.claim_profile("k", {"int8": True}) == {"int8": True}
    assert second.claim_profile("k", {"int8": False}) == {"int8": True}
    assert second.load_profile("k") == {"int8": True}
    redis_client.Redis.from_url(redis.url).set("dynaqa:profile:j", "[]")
    assert second.claim_profile("j", {"int8": False}) == {"int8": False}
    assert first.load_profile("j") == {"int8": False}
    decision, source = calibration.int8_decision(second, tmp_path)  # nothing recorded yet: probed
    assert source == "measured"
    assert calibration.int8_decision(first, tmp_path / "other") == (decision, "state:redis")


def test_redis_going_away_never_fails_a_request_or_readiness(serve: Serve) -> None:
    redis = Redis()
    try:
        with serve(redis_url=redis.url) as server:
            assert post(server, EXAMPLES[2], {"X-Latency-Budget-Ms": "20000"}).status_code == 200
            statuses: list[int] = []

            def load() -> None:  # requests keep coming while Redis dies and comes back
                for example in EXAMPLES[:16]:
                    statuses.append(post(server, example, {"X-Latency-Budget-Ms": "20000"}).status_code)

            worker = threading.Thread(target=load)
            worker.start()
            time.sleep(0.3)
            redis.stop()  # Redis dies mid-run
            time.sleep(2.5)  # a few controller ticks try to publish and fail
            assert httpx.get(server.url + "/v2/health/ready").status_code == 200
            metrics = httpx.get(server.url + "/metrics").text
            errors = [line for line in metrics.splitlines() if line.startswith("dynaqa_state_errors_total{")]
            assert errors and sum(float(line.split()[-1]) for line in errors) >= 1
            assert '"event": "redis unavailable"' in server.log_path.read_text()
            redis = Redis(port=redis.port)  # it comes back on the same port: the replica resyncs
            time.sleep(2.5)
            worker.join()
            assert statuses == [200] * 16
            assert '"event": "redis back"' in server.log_path.read_text()
            written_back = redis_client.Redis.from_url(redis.url, decode_responses=True).keys("dynaqa:profile:*")
            assert [k for k in written_back if not k.startswith("dynaqa:profile:int8-")]  # the latency profile
            assert post(server, EXAMPLES[3], {"X-Latency-Budget-Ms": "20000"}).status_code == 200
    finally:
        redis.stop()
