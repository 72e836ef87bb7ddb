"""Training: distillation pairing, the sandwich rule, losses that learn, a resumable pipeline."""

import json
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.data import squad
from models.errors import InvalidInput
from models.nn.subnet import SubnetConfig
from models.train import pipeline
from models.train.distill import (
    LENGTH_FACTOR,
    length_drop_loss,
    length_sandwich,
    matched_hidden,
    sandwich,
    subnet_loss,
    width_depth_loss,
    width_loss,
)
from models.train.finetune import finetune_loss
from models.train.loop import Recipe, plan_batches, train
from tests.conftest import tiny_model

EXAMPLES = [
    squad.SquadExample(str(i), f"what is item {i}?", f"Item {i} is a {c} box. It sits on a shelf.", (f"{c} box",), (0,))
    for i, c in enumerate(["red", "blue", "green", "small", "large", "old", "new", "wooden"])
]


def windows(tokenizer_dir: Path) -> squad.Windows:
    examples = [
        squad.SquadExample(e.qid, e.question, e.context, e.answers, (e.context.index(e.answers[0]),)) for e in EXAMPLES
    ]
    return squad.encode(squad.load_tokenizer(tokenizer_dir), examples, 96, 16, with_labels=True)


def test_hidden_states_pair_as_dynabert_does() -> None:
    student = ("emb", "s0", "s2", "s4")  # embeddings, then outputs of kept layers 0, 2, 4
    teacher = ("emb", "t0", "t1", "t2", "t3", "t4", "t5")  # embeddings, then outputs of layers 0..5
    s, t = matched_hidden(student, teacher, (0, 2, 4))  # type: ignore[arg-type]
    # entering kept layer k <-> teacher entering layer layer_ids[k], plus the final outputs
    assert list(zip(s, t)) == [("emb", "emb"), ("s0", "t1"), ("s2", "t3"), ("s4", "t5")]


def test_chosen_pairs_replace_the_sampling(base_dir: Path) -> None:
    """`--pairs`: exactly those pairs, in that order, on every step (terms equal each pair's own loss)."""
    student, teacher = tiny_model(), tiny_model(seed=1)  # eval mode: no dropout, so terms are exact
    batch = squad.collate(windows(base_dir), list(range(4)))
    pairs = (SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 0.75))
    with torch.no_grad():
        terms = list(width_depth_loss(student, teacher, pairs=pairs)(batch, random.Random(0)))
        teacher_out = teacher(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True
        )
        expected = [subnet_loss(student, p, batch, teacher_out, 1.0) for p in pairs]
    assert len(terms) == 2 and all(torch.allclose(t, e) for t, e in zip(terms, expected))


def test_sandwich_takes_largest_smallest_and_distinct_others() -> None:
    picks = sandwich(random.Random(0), 2)
    assert picks[0] == SubnetConfig(1.0, 1.0) and picks[1] == SubnetConfig(0.25, 0.5)
    assert len(set(picks)) == 4


def test_length_sandwich_is_lat_lengthdrop() -> None:
    rng = random.Random(3)
    for _ in range(50):
        largest, smallest, *others = length_sandwich(rng, 6, 2)
        assert largest == SubnetConfig(1.0, 1.0)  # the full model at full length anchors the rest
        assert (smallest.width, smallest.depth) == (0.25, 0.5)
        assert smallest.lengths == pytest.approx([0.8, 0.64, 0.512])  # every layer 0.8x the one before
        assert len(others) == 2
        for subnet in others:
            subnet.check_layers(6)
            assert subnet.lengths is not None
            previous = 1.0
            for ratio in subnet.lengths:  # each layer keeps between 0.8x and 1x of the layer before
                assert LENGTH_FACTOR * previous - 1e-3 <= ratio <= previous
                previous = ratio
    pairs = {(s.width, s.depth) for _ in range(200) for s in length_sandwich(rng, 6, 2)[2:]}
    assert len(pairs) == 12  # random pairs come from the whole grid, the full width and depth included


def test_each_stage_loss_goes_down(base_dir: Path, tmp_path: Path) -> None:
    data = windows(base_dir)
    recipe = Recipe(epochs=12, batch_size=4, lr=3e-3, warmup=0.0, save_every=1000)
    student = tiny_model()
    report = train(student, data, recipe, finetune_loss(student), tmp_path / "a.pt", "t", progress=False)
    assert report["loss_every_50_steps"] and report["steps"] == len(plan_batches(data, recipe))
    teacher = tiny_model(seed=1)
    for name, make in (("w", width_loss), ("wd", width_depth_loss), ("length", length_drop_loss)):
        model = tiny_model()
        loss_fn = make(model, teacher)
        batch = squad.collate(data, list(range(4)))
        with torch.no_grad():
            before = sum(float(t) for t in loss_fn(batch, random.Random(0)))
        train(model, data, recipe, loss_fn, tmp_path / f"{name}.pt", name, progress=False)
        with torch.no_grad():
            after = sum(float(t) for t in loss_fn(batch, random.Random(0)))
        # soft cross-entropy cannot fall below the teacher's own entropy: ask for a clear drop
        assert after < before * 0.92, (name, before, after)


def test_training_resumes_from_its_state_file(base_dir: Path, tmp_path: Path) -> None:
    data = windows(base_dir)
    recipe = Recipe(epochs=4, batch_size=4, lr=1e-3, save_every=2)
    straight = tiny_model()
    train(straight, data, recipe, finetune_loss(straight), tmp_path / "s.pt", "s", progress=False)
    resumed = tiny_model()
    calls = 0
    inner = finetune_loss(resumed)

    def interrupted(batch, rng):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 6:  # the run is killed during step 6; state was saved after step 4
            raise KeyboardInterrupt
        return inner(batch, rng)

    with pytest.raises(KeyboardInterrupt):
        train(resumed, data, recipe, interrupted, tmp_path / "r.pt", "r", progress=False)
    assert torch.load(tmp_path / "r.pt", weights_only=False)["step"] == 4
    resumed = tiny_model(seed=5)  # a fresh process: nothing but the state file carries over
    train(resumed, data, recipe, finetune_loss(resumed), tmp_path / "r.pt", "r", progress=False)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_time_budget_pauses_after_a_step_and_the_resumed_run_ends_where_a_straight_one_does(
    base_dir: Path, tmp_path: Path
) -> None:
    data = windows(base_dir)
    recipe = Recipe(epochs=2, batch_size=4, lr=1e-3, save_every=50)
    straight = tiny_model()
    train(straight, data, recipe, finetune_loss(straight), tmp_path / "s.pt", "s", progress=False)
    paused = tiny_model()
    past = time.monotonic() - 1  # already out of time: one step, then the state is saved
    report = train(paused, data, recipe, finetune_loss(paused), tmp_path / "p.pt", "p", progress=False, deadline=past)
    assert report == {"paused_at": 1, "steps": 4}
    assert torch.load(tmp_path / "p.pt", weights_only=False)["step"] == 1  # saved although save_every is 50
    resumed = tiny_model(seed=5)
    report = train(resumed, data, recipe, finetune_loss(resumed), tmp_path / "p.pt", "p", progress=False)
    assert report["steps"] == 4 and "paused_at" not in report
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_pipeline_runs_every_stage_and_skips_finished_ones(tmp_path: Path) -> None:
    from tests.conftest import DATA

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
