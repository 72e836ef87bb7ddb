"""The layer steps compiled by TorchInductor, installed on a packed model for inference.

Why: at batch 1 a small sub-network is mostly Python and dispatcher time, not arithmetic. An INT8
linear map alone is ~12 eager ops (per-token scales, integer matmul, rescale), a layer ~60;
compiled, a layer is one call of a few fused C++ loops around the matmuls. Compiled INT8 can score
a few tenths of F1 below eager, which is why compiling is opt-in (`--compiled`, `DYNAQA_COMPILE`).
Every layer shares the same functions, so a few graphs serve every width and depth: Dynamo
specialises only on INT8 vs float, masked vs unmasked, and batch 1 vs more.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable

import torch

from models.nn.layers import key_bias
from models.nn.transformer import EAGER_STEPS, DynamicBertForQA, LayerSteps

log = logging.getLogger(__name__)


def compiled_steps(probe: Callable[[LayerSteps], None]) -> LayerSteps:
    """The layer steps compiled with symbolic shapes, or the eager ones if that fails.

    `probe` runs the compiled steps on every variant serving meets now, so compilation happens at
    load (not inside some request's budget) and a machine without a working C++ toolchain falls
    back to eager here, with a warning, instead of failing a request later.
    """
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    eager = (EAGER_STEPS.whole, EAGER_STEPS.attend, EAGER_STEPS.finish)
    steps = LayerSteps(*(torch.compile(f, dynamic=True) for f in eager))
    try:
        probe(steps)
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
        log.warning(json.dumps({"event": "compile failed, running eager", "error": str(exc)[:500]}))
        return EAGER_STEPS
    return steps


def probe_every_variant(model: DynamicBertForQA, steps: LayerSteps) -> None:
    """Run `steps` on every variant serving meets: each packed width, float and INT8, one
    window or several, unmasked or padded, whole layers and both halves of a dropping one (so
    Dynamo compiles them all now). Seven tokens, five kept, three windows: sizes no weight
    has, so no size of the input is taken for a constant."""
    assert model.packed is not None
    layer, hidden = model.encoder.layers[0], model.config.hidden_size
    mask = torch.tensor([[True] * 7, [True] * 7, [True] * 4 + [False] * 3])
    with torch.inference_mode():
        for layers in model.packed.values():
            for batch, bias in ((1, None), (3, None), (3, key_bias(mask[:3], torch.float32))):
                x = torch.randn(batch, 7, hidden)
                steps.whole(layer, x, bias, layers[0])
                q, k, v = steps.attend(layer, x, layers[0])
                steps.finish(layer, x, q, k, v, torch.arange(5).repeat(batch, 1), bias, layers[0])


def compile_layers(model: DynamicBertForQA) -> bool:
    """Compile `model`'s inference layer steps now and install them; False if they fell back to
    eager. Needs packed weights (`models.infer.packing.pack_widths`): it runs every packed width
    once. Training (`model.train()`) goes back to the eager steps."""
    model.encoder.steps = compiled_steps(functools.partial(probe_every_variant, model))
    return model.compiled
