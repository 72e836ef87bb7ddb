"""The one training loop every stage uses: batches, optimiser, schedule, resume, progress.

A stage supplies a loss function of a batch; the loop supplies dynamic padding with
length-bucketed shuffling, AdamW with linear warm-up and decay, gradient clipping, a progress bar
with the running loss, structured log lines, and a state file written every `save_every` steps
so a CPU run can be stopped and continued exactly where it was.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from models.data import squad
from models.data.squad import Windows
from models.nn.transformer import DynamicBertForQA

log = logging.getLogger(__name__)

# A loss is a sequence of terms (one per sub-network), each backpropagated as soon as it is
# computed: only one sub-network's graph is alive at a time. All 12 width x depth pairs summed into
# one graph need about 24 GB at batch 16 x 384 tokens; term by term it is one pair's worth.
LossFn = Callable[[dict[str, Tensor], random.Random], Iterable[Tensor]]


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one stage (recorded in training.json)."""

    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 384
    stride: int = 128
    seed: int = 13
    save_every: int = 50
    max_steps: int | None = None  # cap for smoke runs and tests
    device: str = "cpu"  # "cuda" where a GPU is lent; weights are saved on the CPU either way


def length_batches(windows: Windows, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort within chunks of 50 batches by length, cut into batches, shuffle batches."""
    order = list(range(len(windows)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for begin in range(0, len(order), chunk):
        part = sorted(order[begin : begin + chunk], key=lambda i: len(windows.input_ids[i]))
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def schedule(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then linear decay to 0 at `total`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def plan_batches(windows: Windows, recipe: Recipe) -> list[list[int]]:
    """Every step's batch, fixed by the seed, so a resumed run sees the same sequence."""
    total = int(len(length_batches(windows, recipe.batch_size, random.Random(recipe.seed))) * recipe.epochs)
    if recipe.max_steps is not None:
        total = min(total, recipe.max_steps)
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < total:
        plan += length_batches(windows, recipe.batch_size, random.Random(recipe.seed + epoch))
        epoch += 1
    return plan[:total]


def train(
    model: DynamicBertForQA,
    windows: Windows,
    recipe: Recipe,
    loss_fn: LossFn,
    state_path: Path,
    desc: str,
    progress: bool = True,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Minimise `loss_fn` over the planned batches; resumes from `state_path` if present.

    At `deadline` (a `time.monotonic()` value) the loop saves its state after the step it is on and
    returns with `paused_at` set: a run that must fit a time slot (a lent GPU's call limit, a
    working session) stops cleanly, and the same call resumes it with the same batches."""
    torch.manual_seed(recipe.seed)
    model.to(recipe.device)
    plan = plan_batches(windows, recipe)
    total = len(plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, total, int(total * recipe.warmup)))
    resumed = _resume(state_path, model, optimizer, scheduler, recipe.device)
    start_step, losses = resumed or (0, [])
    if resumed:
        log.info(json.dumps({"stage": desc, "event": "resumed", "step": start_step, "of": total}))
    model.train()
    began = time.time()
    bar = tqdm(range(start_step, total), desc=desc, unit="step", disable=not progress, initial=start_step, total=total)
    for step in bar:
        batch = {k: v.to(recipe.device) for k, v in squad.collate(windows, plan[step]).items()}
        losses.append(_step(model, optimizer, scheduler, loss_fn, batch, recipe.seed * 100_003 + step))
        recent = losses[-50:]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
        out_of_time = deadline is not None and time.monotonic() >= deadline and step + 1 < total
        if (step + 1) % recipe.save_every == 0 or step + 1 == total or out_of_time:
            _save_state(state_path, model, optimizer, scheduler, step + 1, losses)
            log.info(
                json.dumps({"stage": desc, "step": step + 1, "of": total, "loss": round(sum(recent) / len(recent), 4)})
            )
        if out_of_time:
            bar.close()
            log.info(json.dumps({"stage": desc, "event": "paused: time budget", "step": step + 1, "of": total}))
            break
    model.eval().to("cpu")
    if len(losses) < total:
        return {"paused_at": len(losses), "steps": total}
    return {
        "recipe": asdict(recipe),
        "steps": total,
        "seconds_this_run": round(time.time() - began, 1),
        "loss_every_50_steps": [
            round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4) for i in range(0, len(losses), 50)
        ],
    }


def _step(
    model: DynamicBertForQA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    loss_fn: LossFn,
    batch: dict[str, Tensor],
    seed: int,
) -> float:
    """One optimiser step on `batch`, each loss term backpropagated as it comes; the summed loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = 0.0
    for term in loss_fn(batch, random.Random(seed)):
        term.backward()
        loss += float(term.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return loss


def _resume(
    state_path: Path,
    model: DynamicBertForQA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    device: str,
) -> tuple[int, list[float]] | None:
    """Load a stopped run's state into model, optimiser, schedule and torch's RNG; its step and
    losses so far, or None where no run was stopped."""
    if not state_path.exists():
        return None
    state = torch.load(state_path, weights_only=False, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return state["step"], state["losses"]


def _save_state(
    state_path: Path,
    model: DynamicBertForQA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    step: int,
    losses: list[float],
) -> None:
    """Everything `_resume` needs, written to a temporary file first so a kill never leaves half a state."""
    tmp = state_path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "losses": losses,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    tmp.replace(state_path)
