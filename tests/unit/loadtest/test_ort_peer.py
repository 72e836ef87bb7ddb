"""The ONNX Runtime peer: its hand-fused graph computes the same function as the dynaqa full model,
its INT8 copy is ORT-quantised, and its dynamic batching answers as one request at a time does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from loadtest import onnx_model, ort_peer
from models.data import squad
from models.infer import checkpoint
from tests.conftest import DATA


@pytest.fixture(scope="module")
def built(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return onnx_model.build(tiny_checkpoint, tmp_path_factory.mktemp("onnx"))


def padded_batch(vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two rows, the second half padding: right padding as the peer and dynaqa both pad."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, (2, 40))
    mask = np.ones_like(ids)
    mask[1, 20:] = 0
    ids[1, 20:] = 0
    types = np.zeros_like(ids)
    types[:, 12:] = 1
    return ids, mask, types


def test_the_fused_graph_computes_the_full_model(built: dict[str, Path], tiny_checkpoint: Path) -> None:
    model = checkpoint.load(tiny_checkpoint, int8=False).model
    ids, mask, types = padded_batch(model.config.vocab_size)
    with torch.inference_mode():
        ours = model(torch.tensor(ids), torch.tensor(mask), torch.tensor(types))
    start, end = onnx_model.logits(onnx_model.session(built["fp32"], 1), ids, mask, types)
    for theirs, mine in ((start, ours.start_logits.numpy()), (end, ours.end_logits.numpy())):
        assert np.abs(theirs[0] - mine[0]).max() < 1e-4
        assert np.abs(theirs[1, :20] - mine[1, :20]).max() < 1e-4  # padding positions are never answers
    ops = {n.op_type for n in onnx.load(str(built["fp32"])).graph.node}
    assert {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"} <= ops


def test_the_int8_graph_is_quantised_and_close(built: dict[str, Path]) -> None:
    ops = {n.op_type for n in onnx.load(str(built["int8"])).graph.node}
    assert "QAttention" in ops and ops & {"DynamicQuantizeMatMul", "MatMulInteger"}
    ids, mask, types = padded_batch(1000)
    exact, _ = onnx_model.logits(onnx_model.session(built["fp32"], 1), ids, mask, types)
    int8, _ = onnx_model.logits(onnx_model.session(built["int8"], 1), ids, mask, types)
    assert int8.shape == exact.shape and np.isfinite(int8).all()
    assert np.corrcoef(int8[0], exact[0])[0, 1] > 0.9


def test_a_batch_answers_as_single_requests_do(tiny_checkpoint: Path, built: dict[str, Path]) -> None:
    answerer = ort_peer.OrtAnswerer(tiny_checkpoint, "fp32", threads=1)
    examples = squad.load_squad(DATA / "eval.json.gz", limit=3)
    forwards: list[int] = []
    answer_all = answerer.answer_all

    def counted(batch: list[ort_peer.Waiting]) -> list[dict]:
        forwards.append(len(batch))
        return answer_all(batch)

    answerer.answer_all = counted  # type: ignore[method-assign]

    async def ask(together: bool) -> list[dict]:
        batcher = ort_peer.DynamicBatcher(answerer, max_batch=16 if together else 1, max_wait_s=0.05)
        runner = asyncio.create_task(batcher.run())
        try:
            return await asyncio.gather(*(batcher.submit(e.question, e.context) for e in examples))
        finally:
            runner.cancel()

    alone = asyncio.run(ask(False))
    assert forwards == [1, 1, 1]
    batched = asyncio.run(ask(True))
    assert forwards[3:] == [3]  # one forward for the three
    for example, one, many in zip(examples, alone, batched, strict=True):
        assert (one["answer"], one["start"], one["end"]) == (many["answer"], many["start"], many["end"])
        assert one["score"] == pytest.approx(many["score"], abs=1e-4)
        assert example.context[one["start"] : one["end"]] == one["answer"]
