"""Budget -> sub-network. Pure: no I/O, no clock; fed measurements, asked for decisions.

The latency model holds, per candidate sub-network, the mean and spread of measured forward time
at a few token counts and batch sizes (from the start-up calibration on this machine), and
interpolates between them. Observed service times correct it online: a running ratio of observed
to predicted time per candidate, a running spread of that ratio, and a fast pace over all
candidates for slowdowns of the whole core (see `Pace`). The chosen candidate is the
most accurate one whose predicted tail latency (mean + k sigma, times a safety factor) fits what is
left of the budget after the queue wait and the plan margin: a high quantile of how much longer
recent requests took, end to end, than their plan said (see `PlanMargin`).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from models.nn.subnet import SubnetConfig


@dataclass(frozen=True)
class Candidate:
    """A sub-network the service may choose, with what it is expected to score."""

    subnet: SubnetConfig
    expected_f1: float | None
    macs: int


@dataclass(frozen=True)
class Point:
    mean_s: float
    std_s: float


@dataclass
class Correction:
    """Running observed/predicted ratio of one candidate (EWMA of mean and squared deviation)."""

    ratio: float = 1.0
    variance: float = 0.0
    samples: int = 0

    def update(self, observed_over_predicted: float, alpha: float) -> None:
        # A running mean over the first samples (the calibration counts as one), then an EWMA:
        # one odd first observation cannot swing the prediction on its own.
        weight = max(alpha, 1.0 / (self.samples + 2))
        delta = observed_over_predicted - self.ratio
        self.ratio += weight * delta
        self.variance = (1 - weight) * (self.variance + weight * delta * delta)
        self.samples += 1


class Pace:
    """How much slower than predicted the model ran over its last few batches, all candidates together.

    The per-candidate corrections are slow averages (a candidate may run once a minute); when the
    core itself slows down (the event loop taking it under a burst of arrivals, a noisy
    neighbour), every candidate slows at once and within a second. The pace is the recent
    observed time over what the corrected model predicted, summed over the last `window`
    batches, never below 1: the planner multiplies every tail by it, so plans made during a
    slowdown assume the slowdown, and the pace falls back to 1 as soon as batches run to
    prediction again (the slow corrections absorb what persists).
    """

    def __init__(self, window: int = 8) -> None:
        if window < 1:
            raise ValueError("the pace needs a window of at least one batch")
        self._batches: deque[tuple[float, float]] = deque(maxlen=window)  # (observed, expected)
        self.factor = 1.0

    def observe(self, observed_s: float, expected_s: float) -> None:
        if expected_s <= 0:
            return
        self._batches.append((observed_s, expected_s))
        observed = sum(o for o, _ in self._batches)
        expected = sum(e for _, e in self._batches)
        self.factor = max(1.0, observed / expected)


class PlanMargin:
    """A high quantile of (actual - planned) latency of recent requests, kept free in every budget.

    The wait a plan counts is a sum of means, and under Poisson bursts it runs past its prediction:
    only the end-to-end error shows by how much. Samples leave after `window` newer ones or
    `horizon_s` seconds. With arrival-time plans only those that used at least `tight_share` of
    their budget are sampled (a loose request overtaken by tighter ones overruns by design); plans
    made as requests leave the queue are all sampled (`tight_share` 0).
    """

    def __init__(
        self, window: int = 200, quantile: float = 0.98, horizon_s: float = 30.0, tight_share: float = 0.5
    ) -> None:
        if not 0.0 < quantile <= 1.0 or window < 1 or horizon_s <= 0:
            raise ValueError("the plan margin needs a window >= 1, a quantile in (0, 1] and a horizon > 0")
        self.quantile = quantile
        self.horizon_s = horizon_s
        self.tight_share = tight_share
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)  # (when, actual - planned)
        self.margin_s = 0.0

    @property
    def samples(self) -> tuple[tuple[float, float], ...]:
        """(when, actual - planned) of the plans the margin is computed from, oldest first."""
        return tuple(self._samples)

    def observe(self, planned_s: float, actual_s: float, budget_s: float, now_s: float) -> None:
        if planned_s >= self.tight_share * budget_s:
            self._samples.append((now_s, actual_s - planned_s))
        self.expire(now_s)

    def expire(self, now_s: float) -> None:
        """Forget samples older than the horizon and recompute the margin."""
        while self._samples and self._samples[0][0] < now_s - self.horizon_s:
            self._samples.popleft()
        if not self._samples:
            self.margin_s = 0.0
            return
        ordered = sorted(excess for _, excess in self._samples)  # a few hundred floats at most
        rank = max(1, math.ceil(self.quantile * len(ordered)))  # nearest rank
        self.margin_s = max(0.0, ordered[rank - 1])


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    predicted_s: float  # tail estimate used for the decision
    fits: bool  # False when lenient fallback to the fastest


@dataclass(frozen=True)
class Infeasible:
    """Nothing fits. `floor_s`: what `fastest`, the sub-network quickest for this input, needs on
    an idle server."""

    reason: str  # "floor" (below the idle floor) or "load" (queue wait makes it impossible)
    floor_s: float
    fastest: Candidate


@dataclass
class LatencyModel:
    """Calibrated (tokens, batch) -> Point per candidate id, with linear interpolation."""

    tokens: list[int]
    batches: list[int]
    points: dict[str, dict[tuple[int, int], Point]] = field(default_factory=dict)

    def predict(self, subnet_id: str, tokens: int, windows: int) -> Point:
        table = self.points[subnet_id]
        by_batch = [self._at_tokens(table, b, tokens) for b in self.batches]
        if windows <= self.batches[0]:
            return by_batch[0] if windows == self.batches[0] else _scale(by_batch[0], windows / self.batches[0])
        for (b0, p0), (b1, p1) in zip(zip(self.batches, by_batch), zip(self.batches[1:], by_batch[1:])):
            if windows <= b1:
                return _lerp(p0, p1, (windows - b0) / (b1 - b0))
        last_b, last = self.batches[-1], by_batch[-1]
        return _scale(last, windows / last_b)  # beyond the largest batch: linear in windows

    def _at_tokens(self, table: dict[tuple[int, int], Point], batch: int, tokens: int) -> Point:
        grid = self.tokens
        if tokens <= grid[0]:
            return table[(grid[0], batch)]
        i = bisect.bisect_left(grid, tokens)
        if i == len(grid):
            return _scale(table[(grid[-1], batch)], tokens / grid[-1])
        t0, t1 = grid[i - 1], grid[i]
        return _lerp(table[(t0, batch)], table[(t1, batch)], (tokens - t0) / (t1 - t0))

    def to_dict(self) -> dict[str, object]:
        return {
            "tokens": self.tokens,
            "batches": self.batches,
            "points": {
                sid: [[t, b, p.mean_s, p.std_s] for (t, b), p in table.items()] for sid, table in self.points.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> LatencyModel:  # type: ignore[type-arg]
        model = cls(list(data["tokens"]), list(data["batches"]))
        for sid, rows in data["points"].items():
            model.points[sid] = {(int(t), int(b)): Point(float(m), float(s)) for t, b, m, s in rows}
        return model


def _lerp(a: Point, b: Point, f: float) -> Point:
    return Point(a.mean_s + (b.mean_s - a.mean_s) * f, a.std_s + (b.std_s - a.std_s) * f)


def _scale(p: Point, f: float) -> Point:
    return Point(p.mean_s * f, p.std_s * f)


class Planner:
    """Chooses a candidate per request; learns from what each choice actually took."""

    def __init__(
        self,
        candidates: list[Candidate],
        latency: LatencyModel,
        safety_factor: float = 1.15,
        tail_sigmas: float = 3.0,
        alpha: float = 0.05,
        margin: PlanMargin | None = None,
        min_f1_share: float = 0.0,
    ) -> None:
        if not candidates:
            raise ValueError("the planner needs at least one candidate")
        self.latency = latency
        self.margin = margin or PlanMargin()
        self.safety_factor = safety_factor
        self.tail_sigmas = tail_sigmas
        self.alpha = alpha
        self.pace = Pace()
        self.corrections: dict[str, Correction] = {c.subnet.id: Correction() for c in candidates}
        front = pareto(candidates, latency)
        self.candidates = quality_floor(front, min_f1_share)
        # The front's points below the quality floor, most accurate first: last resorts (`choose`).
        self.reserves = [c for c in front if c not in self.candidates]
        # Every sub-network this planner can choose, most accurate first (read per request by `rank`).
        self.served = self.candidates + self.reserves

    def rank(self, candidate: Candidate) -> int:
        """Position in order of accuracy (0 = most accurate); the reserves come after every candidate."""
        return self.served.index(candidate)

    def tail_s(self, candidate: Candidate, tokens: int, windows: int = 1) -> float:
        """Predicted tail service time: corrected mean + k sigma, times the safety factor and the pace."""
        point = self.latency.predict(candidate.subnet.id, tokens, windows)
        correction = self.corrections[candidate.subnet.id]
        mean = point.mean_s * correction.ratio
        sigma = math.hypot(point.std_s * correction.ratio, math.sqrt(correction.variance) * point.mean_s)
        return (mean + self.tail_sigmas * sigma) * self.safety_factor * self.pace.factor

    def mean_s(self, candidate: Candidate, tokens: int, windows: int = 1) -> float:
        point = self.latency.predict(candidate.subnet.id, tokens, windows)
        return point.mean_s * self.corrections[candidate.subnet.id].ratio * self.pace.factor

    def choose(
        self,
        budget_s: float,
        elapsed_s: float,
        queue_wait_s: float,
        tokens: int,
        windows: int,
        level: int = 0,
        others_slack_s: float = math.inf,
    ) -> Choice | Infeasible:
        """Most accurate candidate allowed at `level` whose tail fits the remaining budget less the
        plan margin and the slack of the queued work it overtakes; else the most accurate last resort
        whose tail fits the remaining budget (the margin never turns a feasible request away).

        The last resorts are the last candidate, the reserves, and whatever sub-network is quickest for
        this input: with their own corrections and token counts the front's order can change. The
        floor is that quickest sub-network's tail: a budget under it fits nothing, and on an idle
        server one over it fits something.
        """
        remaining = budget_s - elapsed_s - queue_wait_s
        allowed = self.candidates[min(level, len(self.candidates) - 1) :]
        limit = min(remaining - self.margin.margin_s, others_slack_s)
        for candidate in allowed:
            tail = self.tail_s(candidate, tokens, windows)
            if tail <= limit:
                return Choice(candidate, tail, True)
        tails = [self.tail_s(c, tokens, windows) for c in self.served]
        quickest = min(range(len(tails)), key=tails.__getitem__)
        first_resort = len(self.candidates) - 1
        for i in range(min(quickest, first_resort), len(tails)):  # most accurate first
            if (i >= first_resort or i == quickest) and tails[i] <= remaining:
                return Choice(self.served[i], tails[i], True)
        floor = tails[quickest]
        return Infeasible("floor" if budget_s < floor else "load", floor, self.served[quickest])

    def accuracy_lost(self, better: Candidate, served: Candidate) -> float:
        """Expected F1 lost by serving `served` instead of `better`; without expected F1s, 2.5
        points per candidate between them (the shipped front's mean step)."""
        if better.expected_f1 is not None and served.expected_f1 is not None:
            return better.expected_f1 - served.expected_f1
        return 2.5 * (self.rank(served) - self.rank(better))

    def observe(self, subnet_id: str, tokens: int, windows: int, seconds: float) -> None:
        """Feed back a measured service time; corrects that candidate's predictions and the pace."""
        if subnet_id not in self.corrections:
            return
        predicted = self.latency.predict(subnet_id, tokens, windows).mean_s
        if predicted > 0:
            correction = self.corrections[subnet_id]
            self.pace.observe(seconds, predicted * correction.ratio)  # before this sample moves the ratio
            correction.update(seconds / predicted, self.alpha)

    def observe_plan(self, planned_s: float, actual_s: float, budget_s: float, now_s: float) -> None:
        """Feed back a planned request's planned and actual latency (arrival to the response sent)."""
        self.margin.observe(planned_s, actual_s, budget_s, now_s)

    def drift(self) -> float:
        """Mean observed/predicted ratio over candidates that have been observed (1.0 if none)."""
        seen = [c.ratio for c in self.corrections.values() if c.samples]
        return sum(seen) / len(seen) if seen else 1.0


def quality_floor(candidates: list[Candidate], share: float) -> list[Candidate]:
    """Drop candidates expected to score below `share` of the best expected F1 (unknown F1s stay).

    Under load the fastest candidates answer whatever fits nothing better, and each such answer
    costs what dozens of good ones gain; the points below the floor stay as the planner's reserves,
    for requests nothing else can answer in time (`Planner.choose`).
    """
    known = [c.expected_f1 for c in candidates if c.expected_f1 is not None]
    if not known:
        return list(candidates)
    floor = share * max(known)
    return [c for c in candidates if c.expected_f1 is None or c.expected_f1 >= floor]


def accuracy(candidate: Candidate) -> tuple[float, int]:
    """How the planner ranks accuracy: expected F1 when known, then MACs (a larger sub-network of
    one checkpoint is the more accurate one)."""
    return (candidate.expected_f1 if candidate.expected_f1 is not None else -1.0, candidate.macs)


def pareto(candidates: list[Candidate], latency: LatencyModel, min_speedup: float = 1.1) -> list[Candidate]:
    """Most accurate first; drop any candidate not at least `min_speedup` times faster than a more
    accurate one (on this machine).

    Accuracy is expected F1 when known, MACs otherwise. Speed is the calibrated batch-1 time summed
    over every calibrated token count (one count alone is a few noisy repeats). A candidate only a
    few percent faster sits inside the planner's own safety margin: it fits almost no budget the
    more accurate one misses, yet would be picked whenever the ranking says so.
    """

    def seconds(c: Candidate) -> float:
        return sum(latency.predict(c.subnet.id, tokens, 1).mean_s for tokens in latency.tokens)

    kept: list[Candidate] = []
    best = math.inf
    for candidate in sorted(candidates, key=accuracy, reverse=True):
        time_s = seconds(candidate)
        if time_s * min_speedup <= best:
            kept.append(candidate)
            best = time_s
    return kept
