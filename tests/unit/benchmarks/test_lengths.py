"""`benchmarks.lengths`: lengths-only candidates timed beside the full model of their precision and
judged on unseen articles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import lengths
from models.errors import InvalidInput
from models.nn.subnet import SubnetConfig
from tests.unit.benchmarks.test_heldout import small_split


def test_each_precision_is_timed_against_its_own_full_model_and_judged_on_both_halves(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed: list[list[SubnetConfig]] = []

    def recording(bench, subnets, rounds, progress):  # type: ignore[no-untyped-def]
        timed.append(list(subnets))
        return real(bench, subnets, rounds, progress)

    real = lengths.side_by_side
    monkeypatch.setattr(lengths, "side_by_side", recording)
    data = small_split(tmp_path / "split.json")
    argv = ["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--candidates", "1,1,0.8,0.5;1,1,1,0.2"]
    assert lengths.main([*argv, "--questions", "3", "--rounds", "1", "--out", str(tmp_path)]) == 0
    # each precision's first timed configuration, its speed-ups' reference, is its own full model
    assert [t[0] for t in timed] == [SubnetConfig(), SubnetConfig(quantized=True)]
    assert all(s.quantized == t[0].quantized and s.lengths for t in timed for s in t[1:])
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


def test_a_split_without_a_second_half_of_articles_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "one.json"
    whole = json.loads(small_split(tmp_path / "split.json").read_text())
    data.write_text(json.dumps({**whole, "data": whole["data"][:1]}))
    with pytest.raises(InvalidInput, match="two articles"):
        lengths.main(["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--candidates", "1,1,1,0.5"])
