"""MACs per sub-network, against the formula in docs/design.md, "Cost", and the MiniLM anchor."""

from models.nn.config import ArchConfig
from models.nn.cost import macs, token_counts
from models.nn.subnet import SubnetConfig

MINILM = ArchConfig()


def test_full_minilm_at_384_tokens_matches_the_anchor() -> None:
    assert round(macs(MINILM, SubnetConfig(), 384) / 1e9, 2) == 4.76


def test_width_depth_and_length_reduce_cost() -> None:
    full = macs(MINILM, SubnetConfig(), 384)
    assert macs(MINILM, SubnetConfig(1.0, 0.5), 384) * 2 == full
    small = macs(MINILM, SubnetConfig(0.25, 0.5), 384)
    assert full / small > 7
    halving = SubnetConfig(1.0, 1.0, tuple(0.5 ** (i + 1) for i in range(6)))
    assert macs(MINILM, halving, 384) < full / 2


def test_token_counts_follow_the_ratios_of_the_real_length() -> None:
    counts = token_counts(SubnetConfig(1.0, 0.5, (0.9, 0.5, 0.5)), 6, 100)
    assert counts == [(100, 90), (90, 50), (50, 50)]
    h, d_w, d_ff = 384, 384, 1536
    expected = sum(4 * a * h * d_w + 2 * a * a * d_w + 2 * b * h * d_ff for a, b in counts)
    assert macs(MINILM, SubnetConfig(1.0, 0.5, (0.9, 0.5, 0.5)), 100) == expected


def test_per_layer_widths_cost_their_own_layers() -> None:
    mixed = SubnetConfig(1.0, 0.5, None, False, (1.0, 0.5, 0.25))
    per_layer = [macs(MINILM, SubnetConfig(w, 0.5), 100) / 3 for w in (1.0, 0.5, 0.25)]
    assert macs(MINILM, mixed, 100) == sum(per_layer)
