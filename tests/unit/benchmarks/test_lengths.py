"""`benchmarks.lengths`: lengths-only candidates timed beside the full model of their precision and
judged on unseen articles."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import lengths
from tests.unit.benchmarks.test_heldout import small_split


def test_each_precision_is_timed_against_its_own_full_model_and_judged_on_both_halves(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = small_split(tmp_path / "split.json")
    argv = ["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--candidates", "1,1,0.8,0.5;1,1,1,0.2"]
    assert lengths.main([*argv, "--questions", "3", "--rounds", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "lengths.json").read_text())
    for precision in ("float", "int8"):
        rows = report[precision]["front"]
        assert [r["lengths"] for r in rows] == [[1, 1, 0.8, 0.5], [1, 1, 1, 0.2]]
        for row in rows:
            expected = report[precision]["full_model_ms"] / row["latency_ms"]
            assert abs(row["speedup"] - expected) <= 0.02 * expected
            assert row["id"].endswith("-q8") == (precision == "int8")
        assert report[precision]["questions"]["report"] > 0
    text = (tmp_path / "lengths.md").read_text()
    assert "## float" in text and "## int8" in text and "chosen on the select half" in text
    assert (tmp_path / "lengths.png").stat().st_size > 0
