"""Shared fixtures: a tiny model for millisecond tests, paths to the real data and weights, and the
real processes (`dynaqa serve`, redis-server) the integration and system tests start."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from loadtest.processes import Redis, Server
from models.infer import checkpoint
from models.nn.bert_weights import base_model_dir
from models.nn.config import ArchConfig
from models.nn.transformer import DynamicBertForQA

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "squad"
# The checkpoint the server tests run: the shipped one unless DYNAQA_TEST_CHECKPOINT names another.
SERVED_CHECKPOINT = Path(os.environ.get("DYNAQA_TEST_CHECKPOINT", str(checkpoint.DEFAULT_DIR)))
TINY = ArchConfig(
    vocab_size=30522,  # the real WordPiece vocabulary, so the real tokenizer fits the tiny model
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=512,
)


def tiny_model(seed: int = 0) -> DynamicBertForQA:
    torch.manual_seed(seed)
    model = DynamicBertForQA(TINY)
    with torch.no_grad():  # spread the weights so slicing and dropping visibly change outputs
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model.eval()


def padded_batch(batch: int = 3, tokens: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with different real lengths per row, segment 1 after the first third."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 8000, (batch, tokens), generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    for row in range(1, batch):
        mask[row, tokens - 5 * row :] = 0
    types = torch.zeros_like(ids)
    types[:, tokens // 3 :] = 1
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types * mask}


@pytest.fixture
def tiny() -> DynamicBertForQA:
    return tiny_model()


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return base_model_dir()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Path:
    """A complete checkpoint directory holding the tiny model and the real tokenizer."""
    return checkpoint.save(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny", base_dir)


@pytest.fixture
def tiny_checkpoint_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of `tiny_checkpoint` this test may damage or rewrite."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


@pytest.fixture(scope="session")
def latency_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One latency-profile cache for the server processes of the whole run: one calibration."""
    return tmp_path_factory.mktemp("latency-cache")


def most_accurate_id(url: str) -> str:
    """The sub-network a loose budget gets from the server at `url`: the first of what `/v1/model`
    says it chooses from. Asked, not recomputed here: the server takes `auto`'s INT8 decision from
    what its hardware recorded, or probes, and a probe in this process can read otherwise (CI:
    this process computed the float front, the server served the INT8 one)."""
    response = httpx.get(url + "/v1/model", timeout=10)
    response.raise_for_status()
    return str(response.json()["subnets"][0]["id"])


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    """A real redis-server on loopback, shared by one test module."""
    server = Redis()
    yield server
    server.stop()


Serve = Callable[..., AbstractContextManager[Server]]


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory, latency_cache: Path) -> Serve:
    """`with serve(**settings) as server:` a real `dynaqa serve` on the served checkpoint, ready
    (`ready=False`: only started), its log in a fresh folder, the session's latency cache unless
    `cache_dir` says otherwise; on the way out it must drain and stop cleanly."""

    @contextmanager
    def serving(ready: bool = True, **settings: object) -> Iterator[Server]:
        settings.setdefault("cache_dir", latency_cache)
        server = Server(SERVED_CHECKPOINT, tmp_path_factory.mktemp("serve") / "log.jsonl", **settings)
        try:
            if ready:
                server.wait_ready()
            yield server
        except BaseException:
            server.stop()
            raise
        assert server.stopped_cleanly()

    return serving
