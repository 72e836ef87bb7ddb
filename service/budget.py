"""The latency budget of a request, from its headers (docs/design.md, the API contract).

`X-Latency-Budget-Ms` wins; otherwise the smallest of `grpc-timeout`, Envoy's
`x-envoy-expected-rq-timeout-ms` and RFC 7240's `Prefer: wait=N`; otherwise the default.
Strictness comes from `Prefer: handling=strict` or `X-Budget-Policy: strict`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from service.errors import InvalidBudget

_GRPC_UNITS = {"H": 3_600_000.0, "M": 60_000.0, "S": 1000.0, "m": 1.0, "u": 1e-3, "n": 1e-6}
_GRPC = re.compile(r"^(\d{1,8})([HMSmun])$")


@dataclass(frozen=True)
class Budget:
    ms: float
    strict: bool
    source: str  # which header set it, or "default"
    preferences_applied: tuple[str, ...] = ()


def _positive_ms(name: str, text: str, scale: float = 1.0) -> float:
    try:
        value = float(text.strip()) * scale
    except ValueError:
        raise InvalidBudget(f"{name} must be a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidBudget(f"{name} must be a positive, finite number, got {text!r}")
    return value


def _grpc_timeout(text: str) -> float:
    match = _GRPC.match(text.strip())
    if match is None:
        raise InvalidBudget(f"grpc-timeout {text!r} is not like '150m' (digits then one of H M S m u n)")
    value = int(match.group(1)) * _GRPC_UNITS[match.group(2)]
    if value <= 0:
        raise InvalidBudget(f"grpc-timeout must be positive, got {text!r}")
    return value


def _prefer(headers: Mapping[str, str]) -> dict[str, str]:
    """RFC 7240 preferences, lower-cased names; `wait=5, handling=strict` or several headers."""
    preferences: dict[str, str] = {}
    for header in [v for k, v in headers.items() if k.lower() == "prefer"]:
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name:
                preferences[name.strip().lower()] = value.strip().strip('"')
    return preferences


def parse(headers: Mapping[str, str], default_ms: float, min_ms: float, max_ms: float) -> Budget:
    """The request's budget in milliseconds, clamped to [min_ms, max_ms]; InvalidBudget if malformed."""
    lower = {k.lower(): v for k, v in headers.items()}
    prefer = _prefer(headers)
    applied: list[str] = []
    policy = lower.get("x-budget-policy")
    if policy is not None and policy.strip().lower() not in ("strict", "lenient"):
        raise InvalidBudget(f"X-Budget-Policy must be 'strict' or 'lenient', got {policy!r}")
    strict = (policy or "").strip().lower() == "strict"
    if prefer.get("handling") in ("strict", "lenient"):
        strict = strict or prefer["handling"] == "strict"
        applied.append(f"handling={prefer['handling']}")
    if "x-latency-budget-ms" in lower:
        ms, source = _positive_ms("X-Latency-Budget-Ms", lower["x-latency-budget-ms"]), "x-latency-budget-ms"
    else:
        candidates: list[tuple[float, str]] = []
        if "grpc-timeout" in lower:
            candidates.append((_grpc_timeout(lower["grpc-timeout"]), "grpc-timeout"))
        if "x-envoy-expected-rq-timeout-ms" in lower:
            envoy = _positive_ms("x-envoy-expected-rq-timeout-ms", lower["x-envoy-expected-rq-timeout-ms"])
            candidates.append((envoy, "x-envoy-expected-rq-timeout-ms"))
        if "wait" in prefer:
            candidates.append((_positive_ms("Prefer: wait", prefer["wait"], 1000.0), "prefer-wait"))
        if candidates:
            ms, source = min(candidates)
            if source == "prefer-wait":
                applied.append(f"wait={prefer['wait']}")
        else:
            ms, source = default_ms, "default"
    return Budget(min(max(ms, min_ms), max_ms), strict, source, tuple(applied))
