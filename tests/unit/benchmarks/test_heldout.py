"""Held-out claims (`models.search.heldout`, `benchmarks.heldout`): each claim is picked on one half
of the articles and its loss read on the other."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import heldout as heldout_cli
from models.data import squad
from models.infer import checkpoint as ckpt
from models.infer import quantize
from models.infer.reader import Reader
from models.search import heldout
from models.search.report import full_split_scores


def small_split(path: Path) -> Path:
    """Four real eval articles, two paragraphs each: halves of two articles."""
    data = squad.read_json(squad.DEFAULT_EVAL)
    articles = [{**a, "paragraphs": a["paragraphs"][:2]} for a in data["data"][:4]]
    path.write_text(json.dumps({"version": "1.1", "data": articles}))
    return path


def test_the_claim_is_chosen_on_the_select_half_and_its_loss_read_on_the_other() -> None:
    rows = [
        {"id": "a", "speedup": 3.0, "loss_select": 0.9, "loss_report": 1.4},
        {"id": "b", "speedup": 4.0, "loss_select": 1.2, "loss_report": 0.2},  # better unseen, not chosen
        {"id": "c", "speedup": 2.0, "loss_select": 0.1, "loss_report": 0.1},
    ]
    assert heldout.best_within(rows, 1.0)["id"] == "a"  # type: ignore[index]
    assert heldout.best_within(rows, 3.0)["id"] == "b"  # type: ignore[index]
    assert heldout.best_within(rows, 0.05) is None


def test_one_article_has_no_half_to_report_on() -> None:
    examples = [squad.SquadExample(str(i), "q?", "c.", article=0) for i in range(3)]
    select, report = heldout.article_halves(examples)
    assert len(select) == 3 and report == []


def test_the_halves_split_articles_and_add_up_to_the_whole_split(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = small_split(tmp_path / "split.json")
    examples = squad.load_squad(data)
    select, report = heldout.article_halves(examples)
    assert {e.article for e in select} == {0, 1} and {e.article for e in report} == {2, 3}
    checkpoint = ckpt.load(tiny_checkpoint)
    result = heldout.judge(Reader(checkpoint), examples, [(checkpoint.resolve("w50d50"), 4.0)], 10.0)
    row = result["front"][0]
    assert row["speedup"] == 2.5 and result["questions"] == {"select": len(select), "report": len(report)}
    whole, _ = full_split_scores(Reader(checkpoint), examples, checkpoint.resolve("w50d50"))
    weighted = (row["f1_select"] * len(select) + row["f1_report"] * len(report)) / len(examples)
    assert abs(weighted - whole) <= 0.01
    text = heldout.markdown(result)
    assert "within 1 F1" in text and "within 3 F1" in text and "subset not recorded" in text
    searched_report_half = heldout.judge(Reader(checkpoint), examples, [], 10.0, subset=(len(select) - 1, 2))
    assert searched_report_half["subset_in_select"] is False
    assert heldout.judge(Reader(checkpoint), examples, [], 10.0, subset=(0, 2))["subset_in_select"] is True


def test_the_cli_judges_a_written_report(tiny_checkpoint: Path, tmp_path: Path) -> None:
    report = tmp_path / "search.json"
    lengths = {"width": 0.5, "depth": 0.5, "lengths": [1.0, 0.5], "quantized": False}  # an id alone cannot say these
    front = [{"width": 0.25, "depth": 0.5, "latency_ms": 2.0}, {**lengths, "latency_ms": 6.0}]
    report.write_text(json.dumps({"full_model": {"latency_ms": 8.0}, "front": front, "subset": 2}))
    data = str(small_split(tmp_path / "split.json"))
    args = ["--report", str(report), "--checkpoint", str(tiny_checkpoint), "--data", data, "--quiet"]
    assert heldout_cli.main(args) == 0
    written = json.loads((tmp_path / "heldout.json").read_text())
    assert [r["speedup"] for r in written["front"]] == [4.0, 1.33] and len(written["claims"]) == 2
    text = (tmp_path / "heldout.md").read_text()
    assert text.startswith(f"Speed-ups from `{report}`") and "within 1 F1" in text and "within 3 F1" in text
    assert written["subset_in_select"] is True and "holding the search's subset" in text


def test_a_report_is_judged_on_its_own_kernel_unless_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy machine's probe can pick the other kernel, whose F1 differs by tenths."""
    from models.infer.quantize import KERNEL_ENV, int8_kernel

    monkeypatch.delenv(KERNEL_ENV, raising=False)
    with heldout_cli.report_kernel(quantize.available_kernels()[-1]):
        assert int8_kernel() in quantize.available_kernels() and os.environ[KERNEL_ENV] == int8_kernel()
    assert KERNEL_ENV not in os.environ
    monkeypatch.setenv(KERNEL_ENV, "onednn")
    with heldout_cli.report_kernel("fbgemm"):
        assert os.environ[KERNEL_ENV] == "onednn"
