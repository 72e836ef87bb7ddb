"""Stage 1 of training: fine-tune the full model on SQuAD; the result is the teacher.

Dynamic padding with length-bucketed shuffling (windows of similar length share a batch), AdamW
with linear warm-up and decay, a fixed seed, a progress bar with the running loss, and a resumable
state file written every `save_every` steps so a CPU run can be stopped and continued.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from models import squad
from models.losses import span_loss
from models.squad import Windows
from models.transformer import DynamicBertForQA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256
    stride: int = 96
    seed: int = 13
    save_every: int = 100


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
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def finetune(
    model: DynamicBertForQA,
    windows: Windows,
    recipe: FinetuneRecipe,
    state_path: Path,
    progress: bool = True,
) -> dict[str, object]:
    """Train the full sub-network on labelled windows; resumes from `state_path` if present."""
    rng = random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    per_epoch = length_batches(windows, recipe.batch_size, random.Random(recipe.seed))
    total = int(len(per_epoch) * recipe.epochs)
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < total:
        plan += length_batches(windows, recipe.batch_size, random.Random(recipe.seed + epoch))
        epoch += 1
    plan = plan[:total]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, total, int(total * recipe.warmup)))
    start_step, losses = 0, []
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, losses = state["step"], state["losses"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed fine-tuning at step %d of %d", start_step, total)
    del rng
    model.train()
    began = time.time()
    bar = tqdm(
        range(start_step, total), desc="finetune", unit="step", disable=not progress, initial=start_step, total=total
    )
    for step in bar:
        batch = squad.collate(windows, plan[step])
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = span_loss(out, batch["start_positions"], batch["end_positions"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss))
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if (step + 1) % recipe.save_every == 0 or step + 1 == total:
            tmp = state_path.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step + 1,
                    "losses": losses,
                    "torch_rng": torch.get_rng_state(),
                },
                tmp,
            )
            tmp.replace(state_path)
            log.info(json.dumps({"stage": "finetune", "step": step + 1, "of": total, "loss": losses[-1]}))
    model.eval()
    return {"recipe": asdict(recipe), "steps": total, "seconds": time.time() - began, "losses_every_50": losses[::50]}
