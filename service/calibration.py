"""Start-up calibration: measure every candidate on this machine, or reuse a shared measurement.

The result is keyed by the checkpoint's weights hash and the hardware (CPU model, cores, torch
version and threads), and looked up first in fleet state (Redis), then in the on-disk cache; a
replica that finds it skips calibrating altogether.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from models.hardware import hardware_id
from models.transformer import DynamicBertForQA
from service.planner import Candidate, LatencyModel, Point
from service.state import StateStore

log = logging.getLogger(__name__)

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
    shared = store.load_profile(key)
    if shared is not None:
        try:
            return LatencyModel.from_dict(shared), f"state:{store.kind}", 0.0
        except (ValueError, KeyError, TypeError) as exc:  # malformed or older format: measure anew
            log.warning(json.dumps({"event": "ignoring bad shared latency profile", "error": str(exc)}))
    path = cache_dir / f"latency-{key}.json"
    if path.is_file():
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            latency = LatencyModel.from_dict(data)
            store.save_profile(key, data)
            return latency, "disk", 0.0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(json.dumps({"event": "ignoring bad latency cache", "path": str(path), "error": str(exc)}))
    began = time.perf_counter()
    latency = measure(model, candidates, max_length, repeats)
    seconds = time.perf_counter() - began
    data = latency.to_dict()
    store.save_profile(key, data)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError as exc:  # a read-only file system only costs the next start a calibration
        log.warning(json.dumps({"event": "cannot cache latency profile", "path": str(path), "error": str(exc)}))
    return latency, "measured", seconds
