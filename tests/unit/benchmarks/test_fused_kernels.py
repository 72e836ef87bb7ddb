"""`benchmarks.fused_kernels` runs both arms on the shipped model and reports what it measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import fused_kernels
from models.infer import native


@pytest.mark.skipif(
    native.kernels() is None or not native.attention_runs(32), reason="no native build or no AVX-512 here"
)
def test_both_arms_are_timed_and_answer_alike(tmp_path: Path) -> None:
    argv = ["--questions", "2", "--rounds", "1", "--subnets", "w25d50,w25d50-q8", "--out", str(tmp_path)]
    assert fused_kernels.main(argv) == 0
    report = json.loads((tmp_path / "fused_kernels.json").read_text())
    assert 0 < report["logit_gap"] < 1.0  # not bit-equal, and close
    assert [(r["tokens"], r["config"]) for r in report["lengths"]] == [
        (t, c) for t in fused_kernels.LENGTHS for c in ("w100d100", "w100d100-q8")
    ]
    assert all(r["torch"] > 0 and r["fused"] > 0 for r in report["lengths"])
    for way in fused_kernels.WAYS:
        table = report["questions_table"][way]
        assert table["w25d50"]["speedup"] == 1.0 and table["w25d50-q8"]["ms"] > 0
    assert "fused is faster by" in (tmp_path / "fused_kernels.md").read_text()
