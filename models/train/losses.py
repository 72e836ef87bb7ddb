"""Training losses: the span task loss and DynaBERT's distillation losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from models.nn.transformer import QAOutput


def span_loss(out: QAOutput, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """Cross-entropy on start and end positions, averaged (BERT's SQuAD loss)."""
    return (F.cross_entropy(out.start_logits, start_positions) + F.cross_entropy(out.end_logits, end_positions)) / 2


def masked_logits(logits: Tensor, attention_mask: Tensor) -> Tensor:
    """Padding can never be a span boundary: push its logits to -inf-like before a softmax."""
    return logits.masked_fill(attention_mask == 0, -1e4)


def soft_cross_entropy(student: Tensor, teacher: Tensor, attention_mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of the student's distribution against the teacher's soft targets."""
    s = masked_logits(student, attention_mask) / temperature
    t = masked_logits(teacher, attention_mask) / temperature
    return -(F.softmax(t, dim=-1) * F.log_softmax(s, dim=-1)).sum(dim=-1).mean()


def logits_distillation(student: QAOutput, teacher: QAOutput, attention_mask: Tensor) -> Tensor:
    """Soft cross-entropy on start and end logits, averaged."""
    return (
        soft_cross_entropy(student.start_logits, teacher.start_logits, attention_mask)
        + soft_cross_entropy(student.end_logits, teacher.end_logits, attention_mask)
    ) / 2


def hidden_mse(student: list[Tensor], teacher: list[Tensor], attention_mask: Tensor) -> Tensor:
    """Mean squared error between paired hidden states, over real tokens only."""
    mask = attention_mask[:, :, None].to(student[0].dtype)
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        total = total + (((s - t) ** 2) * mask).sum() / (mask.sum() * s.shape[-1])
    return total
