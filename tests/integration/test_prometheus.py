"""A real Prometheus on loopback scrapes a running service under load and evaluates every
recording rule and every KEDA / prometheus-adapter query through its HTTP API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from loadtest.processes import Server, free_port
from models.data import squad
from tests.conftest import DATA, REPO, Serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, serve: Serve) -> Iterator[tuple[Server, str]]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing (Debian package prometheus; .ci/run installs it)"
    tmp = tmp_path_factory.mktemp("prom")
    with serve(ready=False, max_queue=16, controller_interval_s=0.5) as server:
        rule = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())["spec"]
        for group in rule["groups"]:
            group["interval"] = "1s"  # the same rules, evaluated every second for a short test
        (tmp / "rules.yml").write_text(yaml.safe_dump(rule))
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "dynaqa",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{server.port}"], "labels": {"namespace": "dynaqa", "pod": "dynaqa-0"}}
                    ],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "prometheus.log").open("w"),
        )
        try:
            server.wait_ready()
            yield server, f"http://127.0.0.1:{port}"
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=20)


def query(prometheus: str, expr: str) -> list[dict]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]  # type: ignore[no-any-return]


def scalar(prometheus: str, expr: str) -> float | None:
    result = query(prometheus, expr)
    return float(result[0]["value"][1]) if result else None


async def load(url: str, rate: float, seconds: float) -> list[int]:
    """Open loop: Poisson arrivals at `rate` per second for `seconds`, bounded."""
    import random

    examples = squad.load_squad(DATA / "eval.json.gz", limit=200)
    rng = random.Random(0)
    statuses: list[int] = []

    async def one(client: httpx.AsyncClient, example: squad.SquadExample) -> None:
        try:
            r = await client.post(
                url + "/v1/qa",
                json={"question": example.question, "context": example.context},
                headers={"X-Latency-Budget-Ms": "1500"},
            )
            statuses.append(r.status_code)
        except httpx.HTTPError:
            statuses.append(0)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        tasks, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            tasks.append(asyncio.create_task(one(client, rng.choice(examples))))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return statuses


def test_rules_and_scaling_queries_have_values_and_degradation_follows_load(stack: tuple[Server, str]) -> None:
    server, prometheus = stack
    deadline = time.time() + 30
    while scalar(prometheus, 'up{job="dynaqa"}') != 1.0 and time.time() < deadline:
        time.sleep(0.5)
    assert scalar(prometheus, 'up{job="dynaqa"}') == 1.0
    time.sleep(3)
    assert scalar(prometheus, "max_over_time(dynaqa_degradation_level[3s])") == 0.0
    statuses = asyncio.run(load(server.url, rate=60, seconds=12))
    assert statuses.count(0) == 0 and set(statuses) <= {200, 503, 504}  # 504: expired in the queue, intended
    time.sleep(3)  # a few scrapes and rule evaluations after the load

    assert (scalar(prometheus, "max_over_time(dynaqa:degradation_level:max[20s])") or 0) >= 1
    rule = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())["spec"]
    records = [r["record"] for g in rule["groups"] for r in g["rules"] if "record" in r]
    missing = [record for record in records if not query(prometheus, f"last_over_time({record}[30s])")]
    assert not missing, missing

    scaled = yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "scaledobject.yaml").read_text())
    for trigger in scaled["spec"]["triggers"]:
        assert query(prometheus, trigger["metadata"]["query"]), trigger["name"]
    adapter = yaml.safe_load((REPO / "deploy" / "k8s" / "overlays" / "prod-hpa" / "adapter-config.yaml").read_text())
    for entry in yaml.safe_load(adapter["data"]["config.yaml"])["rules"]:
        series = entry["seriesQuery"].split("{")[0].strip("'")
        expr = (
            entry["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="dynaqa"')
            .replace("<<.GroupBy>>", "pod")
        )
        assert query(prometheus, expr), expr
