"""The peer a user would otherwise write: FastAPI + transformers' QA pipeline holding the teacher.

`python -m loadtest.peer --checkpoint DIR --port N` exports the checkpoint's full model to a
Hugging Face BertForQuestionAnswering directory (once, in a temporary folder) and serves
POST /v1/qa with `pipeline("question-answering")`, ignoring budgets, one request at a time in a
thread pool as a plain FastAPI endpoint does. Loopback only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Question(BaseModel):
    question: str
    context: str


def export_hf(checkpoint_dir: Path, out: Path) -> Path:
    """Write the checkpoint's full model as a transformers BertForQuestionAnswering directory."""
    from transformers import BertConfig, BertForQuestionAnswering

    from models import checkpoint
    from models.bert_weights import to_bert_name

    loaded = checkpoint.load(checkpoint_dir)
    hf = BertForQuestionAnswering(BertConfig(**loaded.config.to_dict()))
    state = {to_bert_name(name): tensor for name, tensor in loaded.model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(name.startswith("bert.pooler") or "position_ids" in name for name in missing)
    hf.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def create_peer(model_dir: Path) -> FastAPI:
    from transformers import pipeline

    qa = pipeline("question-answering", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    app = FastAPI(title="transformers pipeline peer")

    @app.post("/v1/qa")
    def answer(body: Question) -> dict[str, object]:
        result = qa(question=body.question, context=body.context)
        return {"answer": result["answer"], "score": result["score"], "start": result["start"], "end": result["end"]}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


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
