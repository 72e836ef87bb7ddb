"""The peer a user would otherwise write: FastAPI + transformers holding the full model.

`python -m loadtest.peer --checkpoint DIR --port N` exports the checkpoint's full model to a
Hugging Face BertForQuestionAnswering directory (once, in a temporary folder) and serves
POST /v1/qa with `pipeline("question-answering")` where the installed transformers still has it.
transformers 5 removed that pipeline, so there the peer does what its task guide does instead:
AutoTokenizer windows (384 tokens, stride 128), the model's start/end logits, the best span of at
most 30 tokens inside the context. Budgets are ignored; one request at a time in a thread pool,
as a plain FastAPI endpoint does. Loopback only.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Question(BaseModel):
    question: str
    context: str


def export_hf(checkpoint_dir: Path, out: Path) -> Path:
    """Write the checkpoint's full model as a transformers BertForQuestionAnswering directory."""
    from transformers import BertConfig, BertForQuestionAnswering

    from models.infer import checkpoint
    from models.nn.bert_weights import to_bert_name

    loaded = checkpoint.load(checkpoint_dir)
    hf = BertForQuestionAnswering(BertConfig(**loaded.config.to_dict()))
    state = {to_bert_name(name): tensor for name, tensor in loaded.model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(name.startswith("bert.pooler") or "position_ids" in name for name in missing)
    hf.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def span_answerer(model_dir: Path) -> Callable[[str, str], dict[str, Any]]:
    """question, context -> {answer, score, start, end}: the QA pipeline, or its plain equivalent."""
    import transformers

    try:
        qa = transformers.pipeline("question-answering", model=str(model_dir), device="cpu")
        return lambda question, context: dict(qa(question=question, context=context))
    except KeyError:  # transformers >= 5: the task was removed
        pass
    import torch

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()

    def answer(question: str, context: str) -> dict[str, Any]:
        enc = tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=384,
            stride=128,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping")
        enc.pop("overflow_to_sample_mapping", None)
        with torch.no_grad():
            out = model(**enc)
        best = (float("-inf"), 0, 0)
        for w in range(len(offsets)):
            in_context = torch.tensor([s == 1 for s in enc.sequence_ids(w)])
            start = out.start_logits[w].masked_fill(~in_context, float("-inf"))
            end = out.end_logits[w].masked_fill(~in_context, float("-inf"))
            n = start.shape[0]
            band = torch.ones(n, n, dtype=torch.bool).triu().tril(29)  # end >= start, at most 30 tokens
            scores = (start[:, None] + end[None, :]).masked_fill(~band, float("-inf"))
            flat = int(scores.argmax())
            i, j = divmod(flat, scores.shape[1])
            if float(scores[i, j]) > best[0]:
                best = (float(scores[i, j]), int(offsets[w][i][0]), int(offsets[w][j][1]))
        score, begin, finish = best
        return {"answer": context[begin:finish], "score": score, "start": begin, "end": finish}

    return answer


def peer_app(title: str, answer: Callable[..., Any], lifespan: Any = None) -> FastAPI:
    """A static peer: POST /v1/qa answered by `answer(body: Question)` (sync or async), and the
    readiness path the load test waits on."""
    app = FastAPI(title=title, lifespan=lifespan)
    app.post("/v1/qa")(answer)

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def create_peer(model_dir: Path) -> FastAPI:
    qa = span_answerer(model_dir)

    def answer(body: Question) -> dict[str, object]:
        result = qa(body.question, body.context)
        return {"answer": result["answer"], "score": result["score"], "start": result["start"], "end": result["end"]}

    return peer_app("transformers pipeline peer", answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    model_dir = export_hf(Path(args.checkpoint), Path(tempfile.mkdtemp(prefix="dynaqa-peer-")))
    uvicorn.run(create_peer(model_dir), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
