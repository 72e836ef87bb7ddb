"""The training loop: every stage's loss goes down, and a run resumes or pauses where a straight one ends."""

import random
import time
from pathlib import Path

import pytest
import torch

from models.data import squad
from models.train.distill import length_drop_loss, width_depth_loss, width_loss
from models.train.finetune import finetune_loss
from models.train.loop import Recipe, plan_batches, train
from tests.conftest import tiny_model


def test_each_stage_loss_goes_down(tiny_windows: squad.Windows, tmp_path: Path) -> None:
    data = tiny_windows
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


def test_training_resumes_from_its_state_file(tiny_windows: squad.Windows, tmp_path: Path) -> None:
    data = tiny_windows
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
    tiny_windows: squad.Windows, tmp_path: Path
) -> None:
    data = tiny_windows
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
