"""The checkpoint directory: one dynamic model, its tokenizer, its searched frontier, its recipe.

Layout (docs/design.md, "The checkpoint"):
  config.json     format marker, architecture and the sub-network space
  model.safetensors  weights (fp16 on disk; upcast to fp32 at load)
  tokenizer files  vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json
  profile.json    the searched Pareto set: per config its F1/EM on the eval split and MACs
  training.json   recipe, data checksums, seeds, scores

Loading validates all of it and names what is wrong; a model that loads is packed for inference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.data.squad import load_tokenizer
from models.errors import CheckpointError, InvalidInput, InvalidSubnet
from models.infer import memory
from models.infer.compile import compile_layers
from models.infer.packing import pack_widths
from models.infer.quantize import Int8Kernel, int8_kernel
from models.nn.bert_weights import load_weights
from models.nn.config import ArchConfig
from models.nn.subnet import DEPTHS, WIDTHS, SubnetConfig
from models.nn.transformer import DynamicBertForQA

FORMAT = "dynaqa-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
REQUIRED = ("config.json", WEIGHTS, "vocab.txt", "tokenizer_config.json", "profile.json")
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "dynaqa-minilm-l6"


@dataclass(frozen=True)
class ProfileEntry:
    """One searched configuration: its sub-network and what it scored on the eval split."""

    subnet: SubnetConfig
    f1: float
    exact_match: float
    macs: int
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.subnet.to_dict(),
            "f1": self.f1,
            "exact_match": self.exact_match,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
        }


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (packed for inference) and everything shipped beside it."""

    path: Path
    model: DynamicBertForQA
    config: ArchConfig
    widths: tuple[float, ...]
    depths: tuple[float, ...]
    tokenizer: Any = None
    # profile.json's searched fronts by key (`FRONT_KEYS`): one per INT8 kernel, and float-only.
    fronts: dict[str, list[ProfileEntry]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def front(self, int8: bool) -> list[ProfileEntry]:
        """The searched front a CPU serves (see `front_key`); empty where no such search ran."""
        key = self.front_key(int8)
        return self.fronts[key] if key else []

    def front_key(self, int8: bool) -> str | None:
        """profile.json's key of the front a CPU serves: without INT8 the float-only one; with
        INT8 the one searched on the kernel this CPU runs (`int8_kernel`: INT8 scores depend on
        the kernel's weight bits, latencies on the kernel), else another kernel's INT8 front
        (scores within tenths of a point; the service re-measures latencies at start-up). None
        where no such front is shipped."""
        if not int8:
            keys = [FRONT_KEYS[None]]
        else:
            keys = [FRONT_KEYS[int8_kernel()], *(key for key in self.fronts if key != FRONT_KEYS[None])]
        return next((key for key in keys if self.fronts.get(key)), None)

    def entries(self) -> list[ProfileEntry]:
        """Every shipped front's entries, front after front."""
        return [entry for front in self.fronts.values() for entry in front]

    def resolve(self, subnet_id: str) -> SubnetConfig:
        """A sub-network by id: a Pareto id from any shipped front, or a width x depth id."""
        for entry in self.entries():
            if entry.subnet.id == subnet_id:
                return entry.subnet
        subnet = SubnetConfig.parse_id(subnet_id)
        self.check(subnet)
        return subnet

    def check(self, subnet: SubnetConfig) -> None:
        """Raise InvalidSubnet unless this checkpoint was trained for `subnet`."""
        subnet.check_layers(self.config.num_hidden_layers)
        if not set(subnet.widths(self.config.num_hidden_layers)) <= set(self.widths) or subnet.depth not in self.depths:
            raise InvalidSubnet(
                f"sub-network {subnet.id} is outside this checkpoint's space "
                f"(widths {list(self.widths)}, depths {list(self.depths)})"
            )

    def fingerprint(self) -> str:
        """sha256 of the weights file: the key under which latency profiles are shared."""
        return file_sha256(self.path / WEIGHTS)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(
    model: DynamicBertForQA,
    out_dir: Path,
    tokenizer_dir: Path,
    *,
    profile: list[ProfileEntry] | None = None,
    training: dict[str, Any] | None = None,
    widths: tuple[float, ...] = WIDTHS,
    depths: tuple[float, ...] = DEPTHS,
) -> Path:
    """Write a complete checkpoint directory (weights as fp16)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.config.to_dict(),
        "subnet_space": {"widths": list(widths), "depths": list(depths), "lengths": "ratios"},
        "weights": WEIGHTS,
        "weights_dtype": "float16",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS))
    for name in TOKENIZER_FILES:
        source = tokenizer_dir / name
        if source.is_file() and source.resolve() != (out_dir / name).resolve():
            shutil.copyfile(source, out_dir / name)
    (out_dir / "profile.json").unlink(missing_ok=True)  # new weights: no earlier front applies
    write_profile(out_dir, profile or [])
    (out_dir / "training.json").write_text(json.dumps(training or {}, indent=2) + "\n")
    return out_dir


# profile.json's key for the front searched with each INT8 kernel (None: searched without INT8):
# `pareto` is oneDNN's (searched on AVX-512 VNNI), `pareto_fbgemm` FBGEMM's (searched on AVX2).
FRONT_KEYS: dict[Int8Kernel | None, str] = {"onednn": "pareto", "fbgemm": "pareto_fbgemm", None: "pareto_float"}


def write_profile(out_dir: Path, profile: list[ProfileEntry], kernel: Int8Kernel | None = "onednn") -> None:
    """Replace the front searched with `kernel` (None: without INT8) in `out_dir`'s profile.json
    and keep the others."""
    path = out_dir / "profile.json"
    body = _read_json(path) if path.is_file() else {"pareto": []}
    body[FRONT_KEYS[kernel]] = [entry.to_dict() for entry in profile]
    path.write_text(json.dumps(body, indent=2) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _read_profile(path: Path) -> dict[str, list[ProfileEntry]]:
    """The fronts by key: `pareto` always, the others where their search ran."""
    body = _read_json(path)
    if not isinstance(body, dict) or not isinstance(body.get("pareto"), list):
        raise CheckpointError(f"{path} must be an object with a 'pareto' list")
    for key in FRONT_KEYS.values():
        if not isinstance(body.get(key, []), list):
            raise CheckpointError(f"{path}: {key!r} must be a list")
    return {key: _read_entries(path, body, key) for key in FRONT_KEYS.values() if key in body}


def _read_entries(path: Path, body: dict[str, Any], key: str) -> list[ProfileEntry]:
    entries = []
    for i, item in enumerate(body.get(key, [])):
        try:
            entries.append(
                ProfileEntry(
                    SubnetConfig.from_dict(item),
                    float(item["f1"]),
                    float(item["exact_match"]),
                    int(item["macs"]),
                    None if item.get("latency_ms") is None else float(item["latency_ms"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: {key}[{i}] is malformed: {exc}") from exc
    return entries


def load(path: Path | str | None = None, compiled: bool = False, int8: bool = True, bf16: bool = False) -> Checkpoint:
    """Load and validate a checkpoint directory; the model comes back in eval mode, packed, with
    INT8 copies when `int8`, and with its layer steps compiled when `compiled` (opt-in everywhere:
    `DYNAQA_COMPILE`, `--compiled`). `bf16` casts every weight (and so every activation) to
    bfloat16 and makes no INT8 copies: measured for CPUs with bf16 matmuls, not served."""
    memory.keep_freed_memory()  # before the first forward: its activations then stay mapped
    root = Path(path) if path is not None else DEFAULT_DIR
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    for name in REQUIRED:
        if not (root / name).is_file():
            raise CheckpointError(f"checkpoint {root} is missing {name}")
    meta = _read_json(root / "config.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{root / 'config.json'} is not a {FORMAT} config (no 'format' marker)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{root} has format_version {meta.get('format_version')!r}; this build reads {FORMAT_VERSION}"
        )
    try:
        config = ArchConfig.from_dict(meta["architecture"])
        space = meta["subnet_space"]
        widths = tuple(float(w) for w in space["widths"])
        depths = tuple(float(d) for d in space["depths"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / 'config.json'} is malformed: {exc}") from exc
    bad = [w for w in widths if w not in WIDTHS] + [d for d in depths if d not in DEPTHS]
    if bad or not widths or not depths:
        raise CheckpointError(f"{root / 'config.json'} declares an unsupported sub-network space: {space}")
    try:
        state = load_file(str(root / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{root / WEIGHTS} is corrupt or unreadable: {exc}") from exc
    model = DynamicBertForQA(config)
    load_weights(model, state, str(root / WEIGHTS))
    model.eval()
    if bf16:
        model.to(torch.bfloat16)
    pack_widths(model, widths, int8=int8 and not bf16)
    if compiled:
        compile_layers(model)
    try:
        tokenizer = load_tokenizer(root)
    except InvalidInput as exc:
        raise CheckpointError(str(exc)) from exc
    if len(tokenizer) != config.vocab_size:
        raise CheckpointError(
            f"tokenizer in {root} has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}"
        )
    checkpoint = Checkpoint(root, model, config, widths, depths, tokenizer, _read_profile(root / "profile.json"))
    if (root / "training.json").is_file():
        checkpoint.training = _read_json(root / "training.json")
    for entry in checkpoint.entries():
        try:
            checkpoint.check(entry.subnet)
        except InvalidSubnet as exc:
            raise CheckpointError(f"{root / 'profile.json'}: {exc}") from exc
    return checkpoint


def info(path: Path | str | None = None) -> dict[str, Any]:
    """A JSON-ready summary: architecture, sub-network space, Pareto ids, size on disk."""
    checkpoint = load(path)
    size = sum(f.stat().st_size for f in checkpoint.path.iterdir() if f.is_file())
    return {
        "path": str(checkpoint.path),
        "architecture": checkpoint.config.to_dict(),
        "parameters": sum(p.numel() for p in checkpoint.model.parameters()),
        "subnet_space": {
            "widths": list(checkpoint.widths),
            "depths": list(checkpoint.depths),
            "lengths": "per kept layer, ratios of the real input length, non-increasing",
        },
        **{f"{key}_ids": [entry.subnet.id for entry in front] for key, front in checkpoint.fronts.items()},
        "size_on_disk_bytes": size,
        "sha256": checkpoint.fingerprint(),
        "training": {k: checkpoint.training[k] for k in ("recipe", "scores") if k in checkpoint.training},
    }
