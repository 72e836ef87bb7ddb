"""Measured sub-networks and their Pareto fronts: F1 (higher) against latency (lower)."""

from __future__ import annotations

from dataclasses import dataclass

from models.nn.subnet import SubnetConfig
from models.search.space import family


@dataclass(frozen=True)
class Measurement:
    subnet: SubnetConfig
    f1: float
    exact_match: float
    latency_ms: float  # mean per question, batch 1, on this CPU
    macs: float  # mean per window


def _fastest_per_subnet(measurements: list[Measurement]) -> list[Measurement]:
    """One measurement per sub-network: its fastest."""
    best: dict[SubnetConfig, Measurement] = {}
    for m in measurements:
        if m.subnet not in best or m.latency_ms < best[m.subnet].latency_ms:
            best[m.subnet] = m
    return list(best.values())


def pareto_front(measurements: list[Measurement]) -> list[Measurement]:
    """Measurements no other one beats on both F1 (higher) and latency (lower), fastest first.

    A sub-network measured more than once (a baseline the search sampled again) counts with its
    fastest measurement, so every subset of the trials sees the same point for it.
    """
    candidates = _fastest_per_subnet(measurements)
    front = [
        m
        for m in candidates
        if not any(
            o.f1 >= m.f1 and o.latency_ms <= m.latency_ms and (o.f1 > m.f1 or o.latency_ms < m.latency_ms)
            for o in candidates
        )
    ]
    return sorted(front, key=lambda m: m.latency_ms)


def pareto_ranks(measurements: list[Measurement]) -> list[list[Measurement]]:
    """Non-dominated sorting: the front, then the front of what is left, and so on."""
    rest, ranks = _fastest_per_subnet(measurements), []
    while rest:
        front = pareto_front(rest)
        ranks.append(front)
        rest = [m for m in rest if m not in front]
    return ranks


def fronts_by_family(trials: list[Measurement]) -> dict[str, list[Measurement]]:
    """The Pareto front of each family: joint, grid alone, lengths alone, and the full model."""
    return {
        name: pareto_front([m for m in trials if name in family(m.subnet)])
        for name in ("joint", "grid", "lengths", "full")
    }


def best_at(front: list[Measurement], latency_ms: float) -> float | None:
    """The best F1 a front reaches within `latency_ms` (None if nothing is that fast)."""
    f1s = [m.f1 for m in front if m.latency_ms <= latency_ms]
    return max(f1s) if f1s else None


def never_below(joint: list[Measurement], other: list[Measurement]) -> bool:
    """True when, at every latency one of `other`'s points reaches, the joint front does as well."""
    return all((best := best_at(joint, m.latency_ms)) is not None and best >= m.f1 for m in other)


def speedup_within(front: list[tuple[float, float]], full: tuple[float, float], loss: float) -> float:
    """Best full-latency / latency among (f1, latency) points within `loss` F1 of `full`."""
    fits = [latency for f1, latency in front if f1 >= full[0] - loss]
    return full[1] / min(fits) if fits else 1.0
