"""Start-up records shared by a fleet: the INT8 decision (and, through the same lookup, the
latency profile), with the real INT8 probe and the in-process state store."""

from __future__ import annotations

import json
from pathlib import Path

from service import calibration
from service.state import LocalState


def test_the_int8_decision_is_probed_once_then_recorded(tmp_path: Path) -> None:
    decision, source = calibration.int8_decision(LocalState(), tmp_path)
    assert source == "measured" and isinstance(decision["int8"], bool) and decision["kernel"] in {"onednn", "fbgemm"}
    [cached] = tmp_path.glob("int8-*.json")
    assert json.loads(cached.read_text()) == decision
    again, source = calibration.int8_decision(LocalState(), tmp_path)
    assert (again, source) == (decision, "disk")


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
