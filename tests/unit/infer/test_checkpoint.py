"""The checkpoint format: round trip, validation messages, `dynaqa info`."""

import json
from pathlib import Path

import pytest
import torch

from models.errors import CheckpointError, InvalidSubnet
from models.infer import checkpoint
from models.infer.checkpoint import ProfileEntry
from models.nn.subnet import SubnetConfig
from tests.conftest import padded_batch, tiny_model


def test_round_trip_keeps_the_model(tiny_checkpoint: Path) -> None:
    loaded = checkpoint.load(tiny_checkpoint)
    b = padded_batch()
    original = tiny_model()
    with torch.inference_mode():
        a = loaded.model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).start_logits
        e = original(b["input_ids"], b["attention_mask"], b["token_type_ids"]).start_logits
    assert (a - e).abs().max() < 0.05  # fp16 on disk
    assert not loaded.model.training and loaded.model.packed is not None
    assert len(loaded.fingerprint()) == 64


def test_profile_ids_resolve(tiny_checkpoint_copy: Path) -> None:
    root = tiny_checkpoint_copy
    subnet = SubnetConfig(0.5, 0.5, (0.8, 0.5))
    checkpoint.write_profile(root, [ProfileEntry(subnet, 70.0, 60.0, 123)])
    loaded = checkpoint.load(root)
    assert loaded.resolve(subnet.id) == subnet
    assert loaded.resolve("w25d75") == SubnetConfig(0.25, 0.75)
    with pytest.raises(InvalidSubnet, match="look it up in the profile"):
        loaded.resolve("w50d50-labcdef")
    assert checkpoint.info(root)["pareto_ids"] == [subnet.id]


def test_each_kernel_front_is_written_beside_the_others_and_reset_by_new_weights(
    tiny_checkpoint_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dynaqa search --write-profile` fills the front of the INT8 kernel it ran (`pareto` for
    oneDNN, `pareto_fbgemm`) or, with INT8 off, `pareto_float`, and keeps the others; a CPU serves
    its own kernel's INT8 front, another kernel's where its own was never searched; saving new
    weights into the directory drops them all (they were measured on the old)."""
    root = tiny_checkpoint_copy
    q8, fb, fast = (
        SubnetConfig(0.5, 1.0, quantized=True),
        SubnetConfig(0.75, 1.0, quantized=True),
        SubnetConfig(0.25, 0.5, (0.8, 0.6)),
    )
    checkpoint.write_profile(root, [ProfileEntry(q8, 60.0, 50.0, 100)])
    checkpoint.write_profile(root, [ProfileEntry(fast, 40.0, 30.0, 50)], None)
    monkeypatch.setattr(checkpoint, "int8_kernel", lambda: "fbgemm")
    loaded = checkpoint.load(root)
    assert [e.subnet for e in loaded.front(True)] == [q8]  # no FBGEMM front yet: oneDNN's
    assert [e.subnet for e in loaded.front(False)] == [fast]
    assert loaded.resolve(fast.id) == fast and checkpoint.info(root)["pareto_float_ids"] == [fast.id]
    checkpoint.write_profile(root, [ProfileEntry(fb, 61.0, 50.0, 150)], "fbgemm")
    loaded = checkpoint.load(root)
    assert [e.subnet for e in loaded.front(True)] == [fb] and [e.subnet for e in loaded.front(False)] == [fast]
    assert checkpoint.info(root)["pareto_ids"] == [q8.id] and checkpoint.info(root)["pareto_fbgemm_ids"] == [fb.id]
    monkeypatch.setattr(checkpoint, "int8_kernel", lambda: "onednn")
    assert [e.subnet for e in loaded.front(True)] == [q8]
    checkpoint.save(loaded.model, root, root)
    assert checkpoint.load(root).entries() == []


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt", "profile.json"])
def test_a_missing_file_is_named(tiny_checkpoint_copy: Path, name: str) -> None:
    root = tiny_checkpoint_copy
    (root / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing {name}"):
        checkpoint.load(root)


def test_a_corrupt_weights_file_is_reported(tiny_checkpoint_copy: Path) -> None:
    root = tiny_checkpoint_copy
    (root / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        checkpoint.load(root)


def test_a_shape_mismatch_names_the_weight(tiny_checkpoint_copy: Path) -> None:
    root = tiny_checkpoint_copy
    config = json.loads((root / "config.json").read_text())
    config["architecture"]["intermediate_size"] = 128
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"weight encoder\.layers\.0\.ffn\.\w+\.weight has shape .* but the config needs"
    ):
        checkpoint.load(root)


def test_an_unknown_subnet_in_the_profile_is_rejected(tiny_checkpoint_copy: Path) -> None:
    root = tiny_checkpoint_copy
    body = {"pareto": [{"width": 0.3, "depth": 1.0, "f1": 1, "exact_match": 1, "macs": 1}]}
    (root / "profile.json").write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match=r"pareto\[0\] is malformed: width 0.3"):
        checkpoint.load(root)


def test_a_wrong_length_count_in_the_profile_is_rejected(tiny_checkpoint_copy: Path) -> None:
    root = tiny_checkpoint_copy
    checkpoint.write_profile(root, [ProfileEntry(SubnetConfig(1.0, 0.5, (0.5,)), 1, 1, 1)])
    with pytest.raises(CheckpointError, match="keeps 2 of 4 layers"):
        checkpoint.load(root)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{")
    for name in checkpoint.REQUIRED[1:]:
        (tmp_path / name).write_text("{}")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load(tmp_path)


def test_info_summarises(tiny_checkpoint: Path) -> None:
    summary = checkpoint.info(tiny_checkpoint)
    assert summary["architecture"]["hidden_size"] == 32
    assert summary["subnet_space"]["widths"] == [1.0, 0.75, 0.5, 0.25]
    assert summary["size_on_disk_bytes"] > 1_000_000 and summary["pareto_ids"] == []
