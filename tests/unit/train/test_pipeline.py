"""The five-stage pipeline on the real base model: every stage runs, finished ones are skipped, rounds continue."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from models.errors import InvalidInput
from models.nn.subnet import SubnetConfig
from models.train import pipeline
from models.train.loop import Recipe
from tests.conftest import DATA


@pytest.mark.slow  # trains every stage from the real base model
def test_pipeline_runs_every_stage_and_skips_finished_ones(tmp_path: Path) -> None:
    tiny = Recipe(batch_size=2, max_steps=1, save_every=1)
    config = pipeline.PipelineConfig(
        DATA / "train.json.gz",
        tmp_path,
        teacher=tiny,
        width=tiny,
        width_depth=tiny,
        length=tiny,
        importance_batches=1,
        limit_train=6,
    )
    last = pipeline.run(config, progress=False)
    assert last.name == "5-length"
    training = json.loads((last / "training.json").read_text())
    assert [s["stage"] for s in training["stages"]] == list(pipeline.STAGES)
    assert training["data"]["train_sha256"].startswith("01746288")
    stamp = (last / "model.safetensors").stat().st_mtime_ns
    pipeline.run(config, progress=False)
    assert (last / "model.safetensors").stat().st_mtime_ns == stamp

    # More stage-W and WD steps later: a new run directory sharing the first two stages, each stage
    # started from the finished one with new batches; its history says what it continued.
    more = tmp_path / "more"
    more.mkdir()
    for done in ("1-teacher", "2-rewired"):
        (more / done).symlink_to(tmp_path / done)
    again = replace(config, out=more, width=replace(tiny, seed=14), continue_from=tmp_path / "3-width")
    width = pipeline.run(again, ("width",), progress=False)
    stage = json.loads((width / "training.json").read_text())["stages"][-1]
    assert stage["stage"] == "width" and stage["recipe"]["seed"] == 14
    assert stage["continued_from"]["stage"] == "width" and stage["continued_from"]["recipe"]["seed"] == 13

    # Stage WD continued with all 12 pairs; the teacher is still `more`'s stage-W model.
    longer = replace(
        again, width_depth=replace(tiny, seed=15), random_subnets=None, continue_from=tmp_path / "4-width-depth"
    )
    wd = pipeline.run(longer, ("width-depth",), progress=False)
    stage = json.loads((wd / "training.json").read_text())["stages"][-1]
    assert stage["sampling"] == "all 12 pairs" and stage["continued_from"]["recipe"]["seed"] == 13

    # A round aimed at chosen pairs (`--pairs`): those pairs, and only those, on every step.
    aimed = more / "aimed"
    aimed.mkdir()
    (aimed / "3-width").symlink_to(more / "3-width")
    pairs = (SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0))
    wd = pipeline.run(replace(longer, out=aimed, wd_pairs=pairs, continue_from=wd), ("width-depth",), progress=False)
    stage = json.loads((wd / "training.json").read_text())["stages"][-1]
    assert stage["sampling"] == "pairs w100d100,w50d100 every step"

    # A checkpoint of another stage is refused before anything is trained.
    (more / "4-width-depth" / "training.json").unlink()
    with pytest.raises(InvalidInput, match="finished stage 'width', not 'width-depth'"):
        pipeline.run(replace(longer, continue_from=tmp_path / "3-width"), ("width-depth",), progress=False)
