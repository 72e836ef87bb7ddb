"""`int8=auto|on|off`: which front the runtime serves, and whether INT8 weights are built."""

import shutil
from pathlib import Path

import pytest

from models.nn.subnet import SubnetConfig, grid
from service.runtime import Runtime
from service.settings import Settings


@pytest.mark.parametrize("mode", ["off", "on", "off with a float front"])
def test_int8_off_serves_a_float_front(
    mode: str, tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a CPU whose integer matmul is slow (`int8=auto` finds out) the service serves the
    float-only front (`pareto_float`) or else the float width x depth grid, and never builds the
    INT8 weights; `on` serves the profile as shipped."""
    from models.infer import checkpoint

    root = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, root)
    profile = [SubnetConfig(1.0, 1.0), SubnetConfig(0.5, 1.0, quantized=True), SubnetConfig(0.5, 0.5)]
    floats = [SubnetConfig(1.0, 1.0), SubnetConfig(0.75, 1.0), SubnetConfig(0.25, 0.5)]
    checkpoint.write_profile(root, [checkpoint.ProfileEntry(s, 50.0 - i, 40.0, 1000) for i, s in enumerate(profile)])
    if mode == "off with a float front":
        entries = [checkpoint.ProfileEntry(s, 49.0 - i, 40.0, 1000) for i, s in enumerate(floats)]
        checkpoint.write_profile(root, entries, None)
    runtime = Runtime(Settings(checkpoint=root, int8=mode.split()[0]))
    with caplog.at_level("INFO", logger="service.runtime"):
        runtime.load()
    served = [c.subnet for c in runtime._candidates]
    expected = {"on": profile, "off": grid(), "off with a float front": floats}[mode]
    assert served == expected
    assert ("int8 off" in caplog.text) == (mode != "on")
    assert ('"event": "int8 on"' in caplog.text) == (mode == "on")
    front = {"on": "pareto", "off": "width x depth grid", "off with a float front": "pareto_float"}[mode]
    assert f'"front": "{front}"' in caplog.text
    assert ('"dropped": ["w50d100-q8"]' in caplog.text) == (mode != "on")
    assert runtime.reader is not None
    assert len(runtime.reader.checkpoint.fronts["pareto"]) == 3  # writing one front kept the other
    packed = runtime.reader.checkpoint.model.packed or {}
    assert any(quantized for _, quantized in packed) == (mode == "on")
