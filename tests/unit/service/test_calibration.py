"""Start-up records shared by a fleet (the INT8 decision, the latency profile) and the lookup
they share: the real INT8 probe and the in-process store (a real Redis: tests/integration/test_redis.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import calibration
from service.state import LocalState


def test_the_int8_decision_is_probed_once_then_recorded(tmp_path: Path) -> None:
    decision, source = calibration.int8_decision(LocalState(), tmp_path)
    assert source == "measured" and isinstance(decision["int8"], bool) and decision["kernel"] in {"onednn", "fbgemm"}
    [cached] = tmp_path.glob("int8-*.json")
    assert json.loads(cached.read_text()) == decision
    again, source = calibration.int8_decision(LocalState(), tmp_path)
    assert (again, source) == (decision, "disk")


def test_a_decision_recorded_by_another_probe_is_probed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's key holds what the probe measures with (threshold, shape, thread count): a
    decision the two-thread probe recorded is not taken by the one-thread probe's replicas."""
    store = LocalState()
    decision, _ = calibration.int8_decision(store, tmp_path)
    for name, other in (("PROBE_THREADS", 2), ("PROBE_SHAPE", (64, 384, 1536)), ("MIN_INT8_SPEEDUP", 1.5)):
        with monkeypatch.context() as m:
            m.setattr(calibration, name, other)
            _, source = calibration.int8_decision(store, tmp_path)
        assert source == "measured", name
    assert calibration.int8_decision(store, tmp_path) == (decision, "state:local")


def test_fleet_state_overrides_this_process_probe(tmp_path: Path) -> None:
    """A replica takes the decision fleet state holds, even one its own probe would not make:
    one front per fleet. A malformed record is probed anew and overwritten."""
    calibration.int8_decision(LocalState(), tmp_path)
    [cached] = tmp_path.glob("int8-*.json")
    key = cached.stem
    store = LocalState()
    other = {"int8": not json.loads(cached.read_text())["int8"], "int8_speedup": 1.0, "kernel": "fbgemm"}
    store.save_profile(key, other)
    assert calibration.int8_decision(store, tmp_path) == (other, "state:local")
    store.save_profile(key, {"int8": "yes"})
    cached.unlink()
    decision, source = calibration.int8_decision(store, tmp_path)
    assert source == "measured" and store.load_profile(key) == decision and cached.is_file()


def test_a_record_comes_from_state_then_disk_then_is_computed(tmp_path: Path) -> None:
    """The lookup both start-up records share; an unreadable cache file is computed anew, never a
    failed start."""
    computed: list[dict[str, int]] = []

    def compute() -> dict[str, int]:
        computed.append({"n": len(computed)})
        return computed[-1]

    def look(store: LocalState) -> tuple[int, str]:
        return calibration.recorded("test record", tmp_path / "r.json", "k", store, compute, lambda d: int(d["n"]))

    assert look(LocalState()) == (0, "measured") and json.loads((tmp_path / "r.json").read_text()) == {"n": 0}
    store = LocalState()
    assert look(store) == (0, "disk") and store.load_profile("k") == {"n": 0}  # shared again
    assert look(store) == (0, "state:local")
    for junk in ("null", "[1]", "{", '{"m": 1}'):
        (tmp_path / "r.json").write_text(junk)
        value, source = look(LocalState())
        assert source == "measured" and value == len(computed) - 1
    assert json.loads((tmp_path / "r.json").read_text()) == computed[-1]
