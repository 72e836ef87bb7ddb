"""The dynamic transformer on a tiny config: shapes, weight paths, Drop-and-Restore."""

import os

import pytest
import torch

from models.infer.compile import compile_layers
from models.infer.packing import pack_widths
from models.nn.subnet import SubnetConfig, grid
from models.nn.transformer import DynamicBertForQA
from tests.conftest import padded_batch


def run(model: DynamicBertForQA, subnet: SubnetConfig | None = None, **batch_kwargs) -> torch.Tensor:
    b = padded_batch(**batch_kwargs)
    with torch.inference_mode():
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], subnet)
    return torch.stack([out.start_logits, out.end_logits])


@pytest.mark.parametrize("subnet", grid(), ids=lambda s: s.id)
def test_every_width_and_depth_runs_on_a_padded_batch(tiny: DynamicBertForQA, subnet: SubnetConfig) -> None:
    logits = run(tiny, subnet)
    assert logits.shape == (2, 3, 24) and torch.isfinite(logits).all()


def test_sub_networks_differ_from_the_full_model(tiny: DynamicBertForQA) -> None:
    full = run(tiny)
    for subnet in grid()[1:]:
        assert not torch.allclose(run(tiny, subnet), full, atol=1e-3), subnet.id


def test_packed_weights_are_contiguous_and_used_at_inference(tiny: DynamicBertForQA) -> None:
    pack_widths(tiny, (1.0, 0.75, 0.5, 0.25))
    subnet = SubnetConfig(0.5, 0.75)
    with torch.inference_mode():
        weights = tiny.layer_weights(subnet)
    assert tiny.packed is not None
    packed = tiny.packed[(0.5, False)]
    assert all(any(w is p for p in packed) for w in weights)
    for w in weights:
        for projection in (w.qkv, w.out, w.ffn_in, w.ffn_out):
            assert projection.weight.is_contiguous() and projection.bias.is_contiguous()
    assert weights[0].out.weight.shape == (32, 16) and weights[0].ffn_in.weight.shape == (32, 32)


def test_packed_path_equals_training_path(tiny: DynamicBertForQA) -> None:
    b = padded_batch()
    mixed = SubnetConfig(1.0, 1.0, (1.0, 0.9, 0.9, 0.5), False, (0.5, 1.0, 0.75, 0.25))
    for subnet in (SubnetConfig(0.25, 0.5), SubnetConfig(0.75, 1.0, (0.9, 0.7, 0.5, 0.5)), mixed):
        pack_widths(tiny, (1.0, 0.75, 0.5, 0.25))
        packed = run(tiny, subnet)
        with torch.no_grad(), torch.enable_grad():
            out = tiny(b["input_ids"], b["attention_mask"], b["token_type_ids"], subnet)
        live = torch.stack([out.start_logits, out.end_logits]).detach()
        assert (packed - live).abs().max() <= 1e-5


def test_each_layer_runs_at_its_own_width(tiny: DynamicBertForQA) -> None:
    pack_widths(tiny, (1.0, 0.75, 0.5, 0.25), int8=True)
    for quantized in (False, True):
        mixed = SubnetConfig(0.75, 1.0, None, quantized, (0.5, 0.75, 0.75, 0.25))
        with torch.inference_mode():
            weights = tiny.layer_weights(mixed)
        assert [w.heads for w in weights] == [2, 3, 3, 1]  # of the tiny model's 4 heads
        logits = run(tiny, mixed)
        assert torch.isfinite(logits).all()
        for uniform in (0.75, 0.5):
            assert not torch.allclose(logits, run(tiny, SubnetConfig(uniform, 1.0, None, quantized)), atol=1e-3)


def test_training_mode_drops_the_stale_packs_and_gets_gradients(tiny: DynamicBertForQA) -> None:
    pack_widths(tiny, (1.0, 0.5))
    tiny.train()
    assert tiny.packed is None
    b = padded_batch()
    out = tiny(b["input_ids"], b["attention_mask"], b["token_type_ids"], SubnetConfig(0.5, 1.0, (0.8, 0.6, 0.5, 0.4)))
    (out.start_logits.sum() + out.end_logits.sum()).backward()
    grad = tiny.encoder.layers[0].attention.query.weight.grad
    assert grad is not None and grad[:16].abs().sum() > 0 and grad[16:].abs().sum() == 0


def test_full_lengths_equal_no_length_reduction(tiny: DynamicBertForQA) -> None:
    for width, depth in ((1.0, 1.0), (0.5, 0.75), (0.25, 0.5)):
        plain = SubnetConfig(width, depth)
        layers = 4 if depth == 1.0 else (3 if depth == 0.75 else 2)
        full_length = SubnetConfig(width, depth, (1.0,) * layers)
        real = padded_batch()["attention_mask"].bool()  # padding is never restored: compare real tokens
        assert (run(tiny, plain) - run(tiny, full_length))[:, real].abs().max() <= 1e-5


def test_drop_and_restore_is_batch_invariant(tiny: DynamicBertForQA) -> None:
    """Each example keeps ceil(ratio * its own length): padding elsewhere changes nothing."""
    subnet = SubnetConfig(1.0, 1.0, (0.8, 0.6, 0.5, 0.3))
    b = padded_batch()
    with torch.inference_mode():
        together = tiny(b["input_ids"], b["attention_mask"], b["token_type_ids"], subnet)
        for row in range(3):
            n = int(b["attention_mask"][row].sum())
            alone = tiny(
                b["input_ids"][row : row + 1, :n],
                b["attention_mask"][row : row + 1, :n],
                b["token_type_ids"][row : row + 1, :n],
                subnet,
            )
            assert (together.start_logits[row, :n] - alone.start_logits[0]).abs().max() <= 1e-4


def test_dropped_tokens_keep_their_last_computed_vector(tiny: DynamicBertForQA) -> None:
    subnet = SubnetConfig(1.0, 1.0, (0.5, 0.5, 0.25, 0.25))
    b = padded_batch(batch=1)
    with torch.inference_mode():
        out = tiny(b["input_ids"], b["attention_mask"], b["token_type_ids"], subnet, output_hidden_states=True)
    assert out.hidden_states is not None
    emb, h1, h2, h3, h4 = out.hidden_states
    changed = [(h1[0] - emb[0]).abs().sum(-1) > 1e-6, (h3[0] - h2[0]).abs().sum(-1) > 1e-6]
    assert int(changed[0].sum()) == 12  # ceil(0.5 * 24) tokens got layer 0's output
    assert int(changed[1].sum()) == 6  # ceil(0.25 * 24) went through layer 2
    dropped_first = ~changed[0]  # dropped at layer 0: the embedding output reaches the head
    assert torch.equal(h4[0, dropped_first], emb[0, dropped_first])
    dropped_third = changed[0] & ~changed[1]  # survived layers 0-1, dropped at layer 2
    assert int(dropped_third.sum()) == 6
    assert torch.equal(h4[0, dropped_third], h2[0, dropped_third])


def test_padding_is_dropped_before_real_tokens(tiny: DynamicBertForQA) -> None:
    from models.nn import drop_restore

    tokens = drop_restore.TokenSet.full(torch.tensor([[1, 1, 1, 0, 0]]))
    scores = torch.tensor([[0.1, 0.2, 0.3, 9.0, 9.0]])
    slots, kept = drop_restore.select(scores, tokens, [2])
    assert sorted(kept.positions[0].tolist()) == [1, 2] and kept.mask.all()


def test_bad_input_shapes_are_named(tiny: DynamicBertForQA) -> None:
    from models.errors import InvalidInput

    ids = torch.ones(1, 8, dtype=torch.long)
    with pytest.raises(InvalidInput, match="attention_mask has shape"):
        tiny(ids, torch.ones(1, 7, dtype=torch.long), torch.zeros_like(ids))
    with pytest.raises(InvalidInput, match="exceed the model's 512 positions"):
        long = torch.ones(1, 600, dtype=torch.long)
        tiny(long, long, torch.zeros_like(long))
    with pytest.raises(InvalidInput, match="batch, tokens"):
        tiny(ids[0], ids[0], ids[0])


def test_int8_subnetworks_are_close_to_float(tiny: DynamicBertForQA) -> None:
    from models.errors import InvalidSubnet

    pack_widths(tiny, (1.0, 0.5))
    for width in (1.0, 0.5):
        float_logits = run(tiny, SubnetConfig(width, 1.0))
        int8_logits = run(tiny, SubnetConfig(width, 1.0, quantized=True))
        assert not torch.equal(float_logits, int8_logits)
        assert torch.corrcoef(torch.stack([float_logits.flatten(), int8_logits.flatten()]))[0, 1] > 0.95
    tiny.train()
    with pytest.raises(InvalidSubnet, match="INT8"):
        b = padded_batch()
        tiny(b["input_ids"], b["attention_mask"], b["token_type_ids"], SubnetConfig(quantized=True))


def test_int8_answers_do_not_depend_on_the_batch(tiny: DynamicBertForQA) -> None:
    """Activation scales are per token: what else is in a batch does not move a window's INT8
    logits (one scale per call would let the loudest token in the batch set it)."""
    pack_widths(tiny, (1.0, 0.5))
    b = padded_batch()
    changed = {k: v.clone() for k, v in b.items()}
    changed["input_ids"][0, :10] = 1  # row 0 only
    with torch.inference_mode():
        for width in (1.0, 0.5):
            subnet = SubnetConfig(width, 1.0, quantized=True)
            together = tiny(b["input_ids"], b["attention_mask"], b["token_type_ids"], subnet)
            other = tiny(changed["input_ids"], changed["attention_mask"], changed["token_type_ids"], subnet)
            assert not torch.equal(together.start_logits[0], other.start_logits[0])
            for logits in ("start_logits", "end_logits"):
                assert torch.equal(getattr(together, logits)[1:], getattr(other, logits)[1:])
            for row in (1, 2):  # alone: unpadded, so attention runs unmasked (float rounding differs)
                n = int(b["attention_mask"][row].sum())
                ids, mask, types = (b[k][row : row + 1, :n] for k in ("input_ids", "attention_mask", "token_type_ids"))
                alone = tiny(ids, mask, types, subnet)
                assert (together.start_logits[row, :n] - alone.start_logits[0]).abs().max() <= 1e-2


def test_int8_activations_are_scaled_per_token() -> None:
    """A token 1000x louder than another leaves the quiet one's precision intact."""
    from models.infer.packing import quantized
    from models.nn.weights import Projection

    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    x[0] *= 1000
    exact = x @ weight.T
    with torch.inference_mode():
        approx = quantized(Projection(weight, torch.zeros(8)))(x)
    assert (approx[1] - exact[1]).abs().max() / exact[1].abs().max() < 0.05
    assert approx.dtype == torch.float32 and approx.shape == exact.shape


def test_int8_falls_back_to_7_bit_weights_where_the_cpu_would_overflow() -> None:
    """oneDNN without VNNI sums byte products in 16 bits: 8-bit weights give wrong results there.
    ONEDNN_MAX_CPU_ISA=AVX2 makes a VNNI CPU such a CPU. Where oneDNN has no integer kernel at all
    (an AVX2-only AMD EPYC runs a reference loop) every product is exact and 8 bits are kept:
    the levels must match what the CPU multiplies exactly, and the answers must be close either way."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from models.infer.quantize import int8_linear, int8_weight_levels\n"
        "w = torch.randn(96, 1536, generator=torch.Generator().manual_seed(0))\n"
        "x = torch.randn(7, 1536, generator=torch.Generator().manual_seed(1))\n"
        "with torch.inference_mode():\n"
        "    y = int8_linear(w, torch.zeros(96), 'onednn')(x)\n"
        "exact = x @ w.T\n"
        "q = torch.full((2, 64), 127, dtype=torch.int8)\n"
        "eight_bit_exact = torch.equal(torch._int_mm(q, q.t().contiguous()), q.int() @ q.int().t())\n"
        "print(int8_weight_levels(), float((y - exact).abs().max() / exact.abs().max()), eight_bit_exact)\n"
    )
    for isa in ("ALL", "AVX2"):
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        levels, error, eight_bit_exact = out.stdout.split()
        assert float(error) < 0.05, (isa, out.stdout)
        assert levels == ("127" if eight_bit_exact == "True" else "63"), (isa, out.stdout)


def test_int8_weights_have_one_scale_per_output_row() -> None:
    """A row 1000x smaller than its neighbour keeps its precision (one scale per matrix zeroes it)."""
    from models.infer.packing import quantized
    from models.nn.weights import Projection

    weight = torch.stack([torch.linspace(-1, 1, 64), torch.linspace(-1e-3, 1e-3, 64)])
    projection = quantized(Projection(weight, torch.zeros(2)))
    x = torch.randn(8, 64)
    exact = x @ weight.T
    with torch.inference_mode():
        approx = projection(x)
    small_row_error = (approx[:, 1] - exact[:, 1]).abs().max() / exact[:, 1].abs().max()
    assert small_row_error < 0.05


COMPILE_CASES = [
    SubnetConfig(),
    SubnetConfig(0.5, 0.75),
    SubnetConfig(0.25, 0.5, quantized=True),
    SubnetConfig(1.0, 1.0, quantized=True),
    SubnetConfig(0.75, 1.0, (1.0, 1.0, 0.7, 0.5)),  # compiled layers before the drops, eager ones after
    SubnetConfig(0.5, 1.0, (1.0, 0.6, 0.6, 0.3), quantized=True),
]


@pytest.mark.slow  # TorchInductor compiles C++ for every variant: 40-50 s on two cores
def test_the_compiled_layer_steps_answer_as_the_eager_ones(tiny: DynamicBertForQA) -> None:
    """Compiling changes the speed, not the answer: same logits on padded batches and alone, for
    float, INT8, depth and Drop-and-Restore configurations; and compilation happens at load."""
    from torch._dynamo.utils import counters

    pack_widths(tiny, (1.0, 0.75, 0.5, 0.25))
    eager = {s: (run(tiny, s), run(tiny, s, batch=1)) for s in COMPILE_CASES}
    pack_widths(tiny, (1.0, 0.75, 0.5, 0.25))
    compile_layers(tiny)
    assert tiny.compiled  # this machine's toolchain compiled it
    graphs = counters["stats"]["unique_graphs"]
    for subnet in COMPILE_CASES:
        assert (run(tiny, subnet) - eager[subnet][0]).abs().max() <= 1e-4, subnet.id
        assert (run(tiny, subnet, batch=1) - eager[subnet][1]).abs().max() <= 1e-4, subnet.id
    assert counters["stats"]["unique_graphs"] == graphs  # the probe at load compiled every variant
    tiny.train()
    assert not tiny.compiled  # training never runs the compiled graphs
