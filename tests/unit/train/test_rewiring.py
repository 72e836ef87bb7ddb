"""Rewiring sorts heads and neurons by importance without changing the full model."""

import torch

from models.nn.subnet import SubnetConfig
from models.train.rewiring import importance, permute, rewire
from tests.conftest import padded_batch, tiny_model


def labelled_batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    batches = []
    for seed in range(n):
        b = padded_batch(batch=4, tokens=24, seed=seed)
        b["start_positions"] = torch.tensor([3, 5, 8, 2])
        b["end_positions"] = torch.tensor([4, 9, 8, 6])
        batches.append(b)
    return batches


def logits(model, subnet=None):  # type: ignore[no-untyped-def]
    b = padded_batch()
    with torch.no_grad():
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], subnet)
    return torch.stack([out.start_logits, out.end_logits])


def test_rewiring_leaves_the_full_model_unchanged() -> None:
    model = tiny_model()
    before = logits(model)
    half_before = logits(model, SubnetConfig(0.5, 1.0))
    rewire(model, labelled_batches(), progress=False)
    assert (logits(model) - before).abs().max() <= 1e-4
    assert not torch.allclose(logits(model, SubnetConfig(0.5, 1.0)), half_before, atol=1e-3)


def test_after_rewiring_importance_is_sorted() -> None:
    model = tiny_model()
    batches = labelled_batches()
    first = rewire(model, batches, progress=False)
    again = importance(model, batches, progress=False)
    expected_heads = torch.sort(first.heads, dim=1, descending=True).values
    assert torch.allclose(again.heads, expected_heads, rtol=1e-3, atol=1e-6)
    assert (again.neurons[:, :-1] >= again.neurons[:, 1:] - 1e-5).all()


def test_importance_leaves_no_gradients_and_keeps_mode() -> None:
    model = tiny_model().train()
    importance(model, labelled_batches(1), progress=False)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_permutation_moves_a_chosen_head_first() -> None:
    model = tiny_model()
    layer = model.encoder.layers[0].attention
    head3 = layer.query.weight[24:32].clone()
    order = torch.tensor([[3, 0, 1, 2]] * 4)
    neurons = torch.arange(64).repeat(4, 1)
    permute(model, order, neurons)
    assert torch.equal(layer.query.weight[:8], head3)
