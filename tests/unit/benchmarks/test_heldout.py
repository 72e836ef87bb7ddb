"""`benchmarks.heldout` picks each claim on one half of the articles and reports it on the other."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import heldout
from models.data import squad
from models.infer import checkpoint as ckpt
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


def test_the_halves_split_articles_and_add_up_to_the_whole_split(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = small_split(tmp_path / "split.json")
    select, report = heldout.article_halves(data)
    articles = squad.read_json(data)["data"]
    first_two = {qa["id"] for a in articles[:2] for p in a["paragraphs"] for qa in p["qas"]}
    assert select == first_two and not select & report and len(report) > 0
    front = {"full_model": {"latency_ms": 10.0}, "front": [{"id": "w50d50", "latency_ms": 4.0}]}
    checkpoint = ckpt.load(tiny_checkpoint)
    result = heldout.judge(front, checkpoint, data, progress=False)
    row = result["front"][0]
    assert row["speedup"] == 2.5 and result["questions"] == {"select": len(select), "report": len(report)}
    whole, _ = full_split_scores(heldout.Reader(checkpoint), squad.load_squad(data), checkpoint.resolve("w50d50"))
    weighted = (row["f1_select"] * len(select) + row["f1_report"] * len(report)) / (len(select) + len(report))
    assert abs(weighted - whole) <= 0.01
    text = heldout.markdown(result, "search.json")
    assert "within 1 F1" in text and "within 3 F1" in text
