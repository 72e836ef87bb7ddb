"""Stage 1 of training: fine-tune the full model on SQuAD; the result is the teacher."""

from __future__ import annotations

import random
from collections.abc import Iterator

from torch import Tensor

from models.nn.transformer import DynamicBertForQA
from models.train.loop import LossFn
from models.train.losses import span_loss


def finetune_loss(model: DynamicBertForQA) -> LossFn:
    """The span cross-entropy of the full sub-network."""

    def loss(batch: dict[str, Tensor], rng: random.Random) -> Iterator[Tensor]:
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        yield span_loss(out, batch["start_positions"], batch["end_positions"])

    return loss
