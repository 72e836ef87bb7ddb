"""At full width, depth and length the model is BERT: equal to transformers' implementation."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from models.infer.packing import pack_widths
from models.nn.bert_weights import convert_state_dict, from_bert
from tests.conftest import TINY, padded_batch


def hf_logits(hf: BertForQuestionAnswering, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = hf(**batch)
    return torch.stack([out.start_logits, out.end_logits])


def ours(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return torch.stack([out.start_logits, out.end_logits])


def test_tiny_random_bert_matches_transformers() -> None:
    from models.nn.transformer import DynamicBertForQA

    torch.manual_seed(1)
    hf = BertForQuestionAnswering(BertConfig(**TINY.to_dict(), attn_implementation="eager")).eval()
    model = DynamicBertForQA(TINY)
    model.load_state_dict(convert_state_dict(hf.state_dict()))
    pack_widths(model.eval(), (1.0,))
    batch = padded_batch()
    assert (ours(model, batch) - hf_logits(hf, batch)).abs().max() <= 1e-4


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_minilm_weights_match_transformers_on_a_padded_batch(base_dir: Path, attn: str) -> None:
    model = from_bert(base_dir).eval()
    pack_widths(model, (1.0,))
    hf = BertForQuestionAnswering.from_pretrained(str(base_dir), local_files_only=True, attn_implementation=attn)
    hf.eval()
    with torch.no_grad():  # the base has no span head: give both the same one
        hf.qa_outputs.weight.copy_(model.head.span.weight)
        hf.qa_outputs.bias.copy_(model.head.span.bias)
    batch = padded_batch(batch=4, tokens=64, seed=3)
    diff = (ours(model, batch) - hf_logits(hf, batch)).abs().max()
    assert diff <= 1e-4, f"max abs difference {diff}"


def test_export_names_round_trip() -> None:
    from models.nn.bert_weights import rename, to_bert_name
    from models.nn.transformer import DynamicBertForQA

    for name in DynamicBertForQA(TINY).state_dict():
        assert rename(to_bert_name(name)) == name
