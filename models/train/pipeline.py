"""The training pipeline: teacher -> rewiring -> stage W -> stage WD -> stage L (LengthDrop).

Resumable stage by stage.

Each stage writes a complete checkpoint directory under OUT (`1-teacher`, `2-rewired`,
`3-width`, `4-width-depth`, `5-length`), so any stage's result can be evaluated with `dynaqa eval`, and a
finished stage is never run again. Inside a stage, `state.pt` lets a stopped run continue at the
step it reached. Every checkpoint's training.json records the recipes, data checksums, seeds and
the history of the stages before it.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from models.data import squad
from models.errors import InvalidInput
from models.infer import checkpoint as ckpt
from models.nn.bert_weights import base_model_dir, from_bert
from models.nn.subnet import SubnetConfig
from models.nn.transformer import DynamicBertForQA
from models.train.distill import length_drop_loss, width_depth_loss, width_loss
from models.train.finetune import finetune_loss
from models.train.loop import Recipe, train
from models.train.rewiring import rewire

log = logging.getLogger(__name__)

STAGES = ("teacher", "rewire", "width", "width-depth", "length")
DIRS = {
    "teacher": "1-teacher",
    "rewire": "2-rewired",
    "width": "3-width",
    "width-depth": "4-width-depth",
    "length": "5-length",
}


@dataclass(frozen=True)
class PipelineConfig:
    train_data: Path
    out: Path
    teacher: Recipe = field(default_factory=lambda: Recipe(epochs=2.0, lr=1.5e-4, save_every=50))
    width: Recipe = field(default_factory=lambda: Recipe(epochs=1.0, lr=5e-5, warmup=0.05, save_every=20))
    width_depth: Recipe = field(default_factory=lambda: Recipe(epochs=1.0, lr=5e-5, warmup=0.05, save_every=20))
    length: Recipe = field(default_factory=lambda: Recipe(epochs=1.0, lr=5e-5, warmup=0.05, save_every=20))
    importance_batches: int = 24
    random_subnets: int | None = 2  # sandwich rule; None trains all 12 pairs each step
    wd_pairs: tuple[SubnetConfig, ...] | None = None  # stage WD trains exactly these pairs each step
    # Stage WD's weight of the hidden-state MSE against the span-logit distillation (DynaBERT: 1).
    width_depth_hidden_weight: float = 1.0
    limit_train: int | None = None  # first N training questions only (smoke runs)
    # Stage W, WD or L starts from this finished checkpoint of the same stage instead of the previous
    # stage's model: more steps without redoing the first ones (the teacher stays the previous stage).
    continue_from: Path | None = None
    # Stop every stage's loop after this many minutes of the run (state saved; the same command resumes).
    max_minutes: float | None = None


class StagePaused(Exception):
    """A stage stopped at the run's time budget, its state saved: the same command continues it."""

    def __init__(self, stage: str, step: int, steps: int) -> None:
        super().__init__(f"stage {stage} paused at step {step} of {steps}: run the same command again to continue")
        self.stage, self.step, self.steps = stage, step, steps


def sha256_json(path: Path) -> str:
    """sha256 of the uncompressed JSON, as ../shared/data/README.md lists them."""
    opener = gzip.open if path.suffix == ".gz" else open
    digest = hashlib.sha256()
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _history(path: Path) -> list[dict[str, Any]]:
    training = json.loads((path / "training.json").read_text())
    return list(training.get("stages", []))


def _save(
    model: DynamicBertForQA, config: PipelineConfig, stage: str, report: dict[str, Any], previous: Path | None
) -> Path:
    out = config.out / DIRS[stage]
    stages = (_history(previous) if previous else []) + [{"stage": stage, **report}]
    training = {
        "recipe": {s["stage"]: s.get("recipe") for s in stages},
        "data": {"train": str(config.train_data), "train_sha256": sha256_json(config.train_data)},
        "limit_train": config.limit_train,
        "stages": stages,
        "torch": torch.__version__,
    }
    model.eval()
    ckpt.save(model, out, base_model_dir(), training=training)
    return out


def _load_model(path: Path) -> DynamicBertForQA:
    model = ckpt.load(path).model
    model.unpack()
    return model


def _continued_stage(stage: str, continue_from: Path | None) -> dict[str, Any] | None:
    """The finished report that `stage` continues, or None; refuses a checkpoint of another stage."""
    if continue_from is None:
        return None
    if not (continue_from / "training.json").exists():
        raise InvalidInput(f"--continue-from {continue_from}: no training.json, not a finished stage checkpoint")
    last = _history(continue_from)[-1]
    if last["stage"] != stage:
        raise InvalidInput(f"--continue-from {continue_from} finished stage {last['stage']!r}, not {stage!r}")
    return last


def run_stage(
    stage: str,
    config: PipelineConfig,
    windows: squad.Windows | None,
    progress: bool = True,
    deadline: float | None = None,
) -> Path:
    """Run one stage from the previous stage's checkpoint; returns its checkpoint directory.

    Raises `StagePaused` if the training loop reached `deadline` (`time.monotonic()`) first."""
    out = config.out / DIRS[stage]
    if (out / "training.json").exists():
        log.info(json.dumps({"stage": stage, "event": "already done", "checkpoint": str(out)}))
        return out
    if windows is None:
        raise InvalidInput("training windows are needed for this stage")
    work = config.out / f"{DIRS[stage]}.work"
    work.mkdir(parents=True, exist_ok=True)
    began = time.time()
    previous = None if stage == "teacher" else config.out / DIRS[STAGES[STAGES.index(stage) - 1]]
    if previous is not None and not (previous / "training.json").exists():
        raise InvalidInput(f"stage {stage} needs {previous}: run the stages before it first")
    continued = _continued_stage(stage, config.continue_from)
    if stage == "teacher":
        model = from_bert(base_model_dir(), seed=config.teacher.seed)
        report = train(
            model, windows, config.teacher, finetune_loss(model), work / "state.pt", "teacher", progress, deadline
        )
    elif stage == "rewire":
        model = _load_model(previous)  # type: ignore[arg-type]
        batches = [squad.collate(windows, b) for b in _importance_batches(windows, config)]  # on the CPU
        scores = rewire(model, batches, progress)
        report = {"importance_batches": len(batches), "head_importance": scores.heads.tolist()}
    else:
        model, report = _distill(
            stage, config, windows, previous, bool(continued), work / "state.pt", progress, deadline
        )
    if "paused_at" in report:
        raise StagePaused(stage, report["paused_at"], report["steps"])
    if continued is not None:
        report["continued_from"] = continued
    report["seconds"] = round(time.time() - began, 1)
    saved = _save(model, config, stage, report, previous)
    shutil.rmtree(work, ignore_errors=True)
    return saved


def _distill(
    stage: str,
    config: PipelineConfig,
    windows: squad.Windows,
    previous: Path | None,
    continued: bool,
    state: Path,
    progress: bool,
    deadline: float | None,
) -> tuple[DynamicBertForQA, dict[str, Any]]:
    """Stage W, WD or L: the previous stage's model, frozen, teaches a copy of itself (or the
    checkpoint `--continue-from` names); the student and the loop's report."""
    teacher = _load_model(previous).eval().to(config.width.device)  # type: ignore[arg-type]
    for p in teacher.parameters():
        p.requires_grad_(False)
    model = _load_model(config.continue_from) if continued else copy.deepcopy(teacher)  # type: ignore[arg-type]
    model.requires_grad_(True)
    if stage == "width":
        loss = width_loss(model, teacher)
        report = train(model, windows, config.width, loss, state, "stage W", progress, deadline)
    elif stage == "width-depth":
        loss = width_depth_loss(
            model,
            teacher,
            hidden_weight=config.width_depth_hidden_weight,
            random_subnets=config.random_subnets,
            pairs=config.wd_pairs,
        )
        report = train(model, windows, config.width_depth, loss, state, "stage WD", progress, deadline)
        report["hidden_weight"] = config.width_depth_hidden_weight
        report["sampling"] = _sampling(config)
    else:
        loss = length_drop_loss(model, teacher)
        report = train(model, windows, config.length, loss, state, "stage L", progress, deadline)
        report["sampling"] = "LengthDrop sandwich: full, smallest at 0.8^k lengths, 2 random pairs x lengths"
    return model, report


def _sampling(config: PipelineConfig) -> str:
    """How stage WD chose its pairs, as training.json records it."""
    if config.wd_pairs is not None:
        return "pairs " + ",".join(p.id for p in config.wd_pairs) + " every step"
    return "all 12 pairs" if config.random_subnets is None else f"sandwich (+{config.random_subnets} random)"


def _importance_batches(windows: squad.Windows, config: PipelineConfig) -> list[list[int]]:
    """Labelled training windows (answer inside) for the importance estimate, seeded."""
    from models.train.loop import plan_batches

    recipe = replace(config.teacher, seed=config.teacher.seed + 1, epochs=1.0, max_steps=config.importance_batches)
    return plan_batches(windows, recipe)


def run(config: PipelineConfig, stages: tuple[str, ...] = STAGES, progress: bool = True) -> Path:
    """Run the given stages in order, skipping the finished ones; returns the last checkpoint.

    With `config.max_minutes`, raises `StagePaused` when the budget runs out inside a stage."""
    deadline = None if config.max_minutes is None else time.monotonic() + 60 * config.max_minutes
    pending = [s for s in stages if not (config.out / DIRS[s] / "training.json").exists()]
    windows = None
    if pending:
        examples = squad.load_squad(config.train_data, config.limit_train)
        tokenizer = squad.load_tokenizer(base_model_dir())
        windows = squad.encode(tokenizer, examples, config.teacher.max_length, config.teacher.stride, with_labels=True)
        log.info(json.dumps({"event": "training windows", "questions": len(examples), "windows": len(windows)}))
    last = config.out
    for stage in stages:
        last = run_stage(stage, config, windows, progress, deadline)
    return last


def describe(config: PipelineConfig) -> dict[str, Any]:
    """The configuration as JSON-ready data."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
