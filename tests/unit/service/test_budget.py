"""Budget headers: which header wins, in which unit, and what is refused."""

import pytest

from service import budget
from service.errors import InvalidBudget


def parse(headers: dict[str, str]) -> budget.Budget:
    return budget.parse(headers, default_ms=1000, min_ms=1, max_ms=60_000)


def test_budget_header_precedence_and_units() -> None:
    assert parse({}).ms == 1000 and parse({}).source == "default"
    assert parse({"X-Latency-Budget-Ms": "150", "grpc-timeout": "10m"}).ms == 150
    assert parse({"grpc-timeout": "150m"}).ms == 150
    assert parse({"grpc-timeout": "2S", "x-envoy-expected-rq-timeout-ms": "700"}).ms == 700
    waited = parse({"Prefer": "wait=0.3", "grpc-timeout": "1S"})
    assert waited.ms == 300 and waited.preferences_applied == ("wait=0.3",)
    assert parse({"X-Latency-Budget-Ms": "1e308"}).ms == 60_000  # clamped
    assert parse({"X-Latency-Budget-Ms": "0.01"}).ms == 1


def test_strictness() -> None:
    assert not parse({}).strict
    strict = parse({"Prefer": "handling=strict, wait=1"})
    assert strict.strict and strict.preferences_applied == ("handling=strict", "wait=1")
    assert parse({"X-Budget-Policy": "strict"}).strict


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Latency-Budget-Ms": "-5"},
        {"X-Latency-Budget-Ms": "0"},
        {"X-Latency-Budget-Ms": "NaN"},
        {"X-Latency-Budget-Ms": "inf"},
        {"X-Latency-Budget-Ms": "soon"},
        {"grpc-timeout": "150ms"},
        {"Prefer": "wait=never"},
        {"X-Budget-Policy": "maybe"},
    ],
)
def test_invalid_budget_headers(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidBudget):
        parse(headers)
