"""Start-up calibration: measure every candidate on this machine, or reuse a shared measurement;
and `DYNAQA_INT8=auto`'s decision, made once per hardware.

The latency profile is keyed by the checkpoint's weights hash and the hardware (CPU model, cores,
torch version and threads), and looked up first in fleet state (Redis), then in the on-disk
cache; a replica that finds it skips calibrating altogether.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from models.hardware import hardware_id
from models.infer.quantize import (
    MIN_INT8_SPEEDUP,
    PROBE_SHAPE,
    PROBE_THREADS,
    int8_enabled,
    int8_kernel,
    int8_speedup,
)
from models.nn.transformer import DynamicBertForQA
from service.planner import Candidate, LatencyModel, Point
from service.state import StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKENS = (64, 128, 256, 384)
BATCHES = (1, 4)


def profile_key(checkpoint_sha: str, candidates: list[Candidate], max_length: int, compiled: bool) -> str:
    """Latency depends on the weights, the machine, the candidates, the window and whether the
    layer step is compiled (a compiled width-0.5 INT8 forward takes about 0.7x the eager one)."""
    ids = ",".join(sorted(c.subnet.id for c in candidates))
    text = f"{checkpoint_sha}|{hardware_id()}|{ids}|{max_length}|{'compiled' if compiled else 'eager'}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def measure(model: DynamicBertForQA, candidates: list[Candidate], max_length: int, repeats: int) -> LatencyModel:
    """Median-free honest timing: mean and spread of `repeats` runs per (candidate, tokens, batch)."""
    tokens = sorted({min(t, max_length) for t in TOKENS})
    latency = LatencyModel(tokens, list(BATCHES))
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for candidate in candidates:
            table = {}
            for n in tokens:
                for batch in BATCHES:
                    ids = torch.randint(1000, 29000, (batch, n), generator=g)
                    mask = torch.ones_like(ids)
                    types = torch.zeros_like(ids)
                    model(ids, mask, types, candidate.subnet)  # warm-up
                    samples = []
                    for _ in range(repeats):
                        began = time.perf_counter()
                        model(ids, mask, types, candidate.subnet)
                        samples.append(time.perf_counter() - began)
                    table[(n, batch)] = Point(statistics.fmean(samples), statistics.pstdev(samples))
            latency.points[candidate.subnet.id] = table
    return latency


def load_or_measure(
    model: DynamicBertForQA,
    candidates: list[Candidate],
    checkpoint_sha: str,
    store: StateStore,
    cache_dir: Path,
    max_length: int,
    repeats: int,
) -> tuple[LatencyModel, str, float]:
    """(latency model, where it came from: state/disk/measured, seconds spent measuring)."""
    key = profile_key(checkpoint_sha, candidates, max_length, model.compiled)
    seconds = 0.0

    def timed() -> dict[str, Any]:
        nonlocal seconds
        began = time.perf_counter()
        data = measure(model, candidates, max_length, repeats).to_dict()
        seconds = time.perf_counter() - began
        return data

    path = cache_dir / f"latency-{key}.json"
    latency, source = recorded("latency profile", path, key, store, timed, LatencyModel.from_dict)
    return latency, source, seconds


def int8_decision(store: StateStore, cache_dir: Path) -> tuple[dict[str, Any], str]:
    """`DYNAQA_INT8=auto`'s decision for this hardware, and where it came from: the first replica's,
    from fleet state or the disk cache, else probed here (`models.infer.quantize`) and recorded.

    One decision per hardware, not per process: the probe's reading varies between processes of one
    machine, and replicas that decided differently could not share a latency profile. The key holds
    the threshold and the probe's shape and threads, so changing any of them probes again.
    """
    text = f"{hardware_id()}|min={MIN_INT8_SPEEDUP}|probe={PROBE_SHAPE}|probe_threads={PROBE_THREADS}"
    key = "int8-" + hashlib.sha256(text.encode()).hexdigest()[:24]

    def probe() -> dict[str, Any]:
        return {
            "int8": int8_enabled("auto"),
            "int8_speedup": round(int8_speedup(), 3),
            "kernel": int8_kernel(),
            "hardware": hardware_id(),
        }

    def parse(data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data.get("int8"), bool):
            raise ValueError("no boolean 'int8'")
        return data

    return recorded("INT8 decision", cache_dir / f"{key}.json", key, store, probe, parse)


def recorded(
    what: str,
    path: Path,
    key: str,
    store: StateStore,
    compute: Callable[[], dict[str, Any]],
    parse: Callable[[dict[str, Any]], T],
) -> tuple[T, str]:
    """`parse` of what fleet state holds under `key`, else of the disk cache at `path`, else of
    `compute()`; with where it came from: `state:KIND`, `disk` or `measured`. What came from disk
    or was computed is claimed in fleet state, where a record another replica made meanwhile
    wins (then `state:KIND`); what was computed and kept is cached on disk. Unreadable or
    malformed records (an older format) are computed anew and replace the shared one."""
    shared = store.load_profile(key)
    if shared is not None:
        try:
            return parse(_object(shared)), f"state:{store.kind}"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(json.dumps({"event": f"ignoring bad shared {what}", "error": str(exc)}))
    if path.is_file():
        try:
            cached = _object(json.loads(path.read_text()))
            return _claimed(what, key, store, cached, parse(cached), "disk", parse)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(json.dumps({"event": f"ignoring bad cached {what}", "path": str(path), "error": str(exc)}))
    data = compute()
    value, source = _claimed(what, key, store, data, parse(data), "measured", parse)
    if source != "measured":  # another replica's record won: the next start reads it from there
        return value, source
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError as exc:  # a read-only file system only costs the next start the work again
        log.warning(json.dumps({"event": f"cannot cache {what}", "path": str(path), "error": str(exc)}))
    return value, source


def _claimed(
    what: str,
    key: str,
    store: StateStore,
    data: dict[str, Any],
    value: T,
    source: str,
    parse: Callable[[dict[str, Any]], T],
) -> tuple[T, str]:
    """`data` (parsed: `value`) claimed in fleet state, or the record another replica claimed
    first; `data` saved over a record that does not parse."""
    kept = store.claim_profile(key, data)
    if kept is data:
        return value, source
    try:
        return parse(_object(kept)), f"state:{store.kind}"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning(json.dumps({"event": f"ignoring bad shared {what}", "error": str(exc)}))
        store.save_profile(key, data)
        return value, source


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"a JSON object was expected, not {type(data).__name__}")
    return data
