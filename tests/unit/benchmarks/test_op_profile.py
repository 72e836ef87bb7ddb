"""`benchmarks.op_profile` sorts a real profile into kinds: the operator names it knows must be the
ones this torch records, or its table would silently put every linear map under "other"."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import op_profile
from models.infer.quantize import int8_enabled


def test_a_profile_puts_the_linear_maps_under_their_kernel(tmp_path: Path) -> None:
    int8 = int8_enabled("auto")
    subnets = "w25d50,w25d50-q8" if int8 else "w25d50"
    assert op_profile.main(["--questions", "4", "--rounds", "1", "--subnets", subnets, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "op_profile.json").read_text())
    rows = {r["config"]: r["ms"] for r in report["rows"]}
    float_ms = rows["w25d50"]
    assert float_ms["linear maps (float)"] > 0.05 * float_ms["total"]
    assert float_ms.get("linear maps (INT8)", 0.0) == 0.0
    assert float_ms["attention"] > 0 and float_ms["LayerNorm"] > 0 and float_ms["GELU"] > 0
    for ms in rows.values():  # operators are timed on the calling thread only: they leave time outside
        assert ms[op_profile.OUTSIDE] > 0
    if int8:
        assert rows["w25d50-q8"]["linear maps (INT8)"] > 0.05 * rows["w25d50-q8"]["total"]
        assert "if INT8 cost only its maps" in (tmp_path / "op_profile.md").read_text()


def test_the_int8_ceiling_swaps_the_float_twins_maps_for_the_int8_ones() -> None:
    rows = [
        {"config": "w75d100", "ms": {"linear maps (float)": 20.0, "total": 30.0}},
        {"config": "w75d100-q8", "ms": {"linear maps (INT8)": 12.0, "linear maps (float)": 0.5, "total": 28.0}},
        {"config": "w50d100-q8", "ms": {"linear maps (INT8)": 8.0, "total": 20.0}},
    ]
    assert op_profile.int8_ceiling(rows, rows[1]) == 22.5  # 30 - 20 + 12 + the INT8 row's own float maps
    assert op_profile.int8_ceiling(rows, rows[2]) is None  # no float twin measured


def test_a_row_adds_up_to_its_median_total() -> None:
    runs = [
        {"attention": 2.0, "GELU": 1.0, "total": 10.0},
        {"attention": 4.0, "GELU": 1.0, "total": 12.0},
        {"attention": 3.0, "GELU": 2.0, "total": 11.0},
    ]
    row = op_profile.median_row(runs, ["GELU", "attention"])
    assert row == {"GELU": 1.0, "attention": 3.0, op_profile.OUTSIDE: 7.0, "total": 11.0}
