"""The sub-network object: validation, ids, DynaBERT's width and depth rules."""

import pytest

from models.errors import InvalidSubnet
from models.nn.subnet import SubnetConfig, grid, kept_heads, kept_layers, kept_neurons, parse_lengths


def test_depth_rule_matches_dynabert() -> None:
    assert kept_layers(6, 1.0) == (0, 1, 2, 3, 4, 5)
    assert kept_layers(6, 0.5) == (0, 2, 4)
    assert kept_layers(6, 0.75) == (0, 1, 2, 4, 5)
    assert kept_layers(12, 0.75) == (0, 1, 2, 4, 5, 6, 8, 9, 10)


def test_width_rule_keeps_heads_and_matching_ffn_fraction() -> None:
    assert [kept_heads(12, w) for w in (1.0, 0.75, 0.5, 0.25)] == [12, 9, 6, 3]
    assert [kept_neurons(12, 1536, w) for w in (1.0, 0.75, 0.5, 0.25)] == [1536, 1152, 768, 384]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0.3}, "width 0.3"),
        ({"depth": 0.6}, "depth 0.6"),
        ({"lengths": (0.5, 0.8)}, "non-increasing"),
        ({"lengths": (1.2,)}, "ratio in (0, 1]"),
        ({"lengths": (0.0,)}, "ratio in (0, 1]"),
        ({"lengths": (float("nan"),)}, "ratio in (0, 1]"),
        ({"lengths": ()}, "must not be empty"),
        ({"width": 0.75, "layer_widths": (0.75, 0.6)}, "= 0.6 is not one of"),
        ({"width": 1.0, "layer_widths": (0.75, 0.5)}, "must be the widest"),
        ({"width": 0.5, "layer_widths": (0.75, 0.5)}, "must be the widest"),
    ],
)
def test_invalid_subnets_are_rejected_with_a_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidSubnet, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        SubnetConfig(**kwargs)


def test_wrong_number_of_lengths_names_the_kept_layers() -> None:
    with pytest.raises(InvalidSubnet, match="depth 0.5 keeps 3 of 6 layers"):
        SubnetConfig(1.0, 0.5, (1.0, 0.9)).check_layers(6)


def test_ids_are_short_stable_and_distinct() -> None:
    ids = {s.id for s in grid()}
    assert len(ids) == 12 and "w50d75" in ids
    a = SubnetConfig(1.0, 0.5, (0.9, 0.8, 0.7))
    assert a.id == SubnetConfig(1.0, 0.5, (0.90000001, 0.8, 0.7)).id
    assert a.id.startswith("w100d50-l") and a.id != SubnetConfig(1.0, 0.5, (0.9, 0.8, 0.6)).id
    assert SubnetConfig.parse_id("w25d50") == SubnetConfig(0.25, 0.5)
    assert hash(a) == hash(SubnetConfig.from_dict(a.to_dict()))


def test_parse_errors_are_clear() -> None:
    with pytest.raises(InvalidSubnet, match="not a sub-network id"):
        SubnetConfig.parse_id("full")
    with pytest.raises(InvalidSubnet, match="comma-separated"):
        parse_lengths("0.9;0.8")


def test_per_layer_widths_name_validate_and_round_trip() -> None:
    mixed = SubnetConfig(0.75, 1.0, None, True, (0.5, 0.75, 0.75, 0.75, 0.5, 0.5))
    assert mixed.id.startswith("w75d100-v") and mixed.id.endswith("-q8")
    assert mixed.widths(6) == (0.5, 0.75, 0.75, 0.75, 0.5, 0.5)
    assert SubnetConfig(0.75, layer_widths=(0.75,) * 6) == SubnetConfig(0.75)  # uniform: one identity
    assert SubnetConfig(0.5, 0.5).widths(6) == (0.5, 0.5, 0.5)
    both = SubnetConfig(0.75, 1.0, (1, 1, 1, 1, 0.7, 0.5), False, (0.5, 0.75, 0.75, 0.75, 0.5, 0.5))
    assert "-v" in both.id and "-l" in both.id and both.id != mixed.id.removesuffix("-q8")
    assert SubnetConfig.from_dict(mixed.to_dict()) == mixed and SubnetConfig.from_dict(both.to_dict()) == both
    assert "layer_widths" not in SubnetConfig(0.5).to_dict()  # dicts recorded before per-layer widths still match
    with pytest.raises(InvalidSubnet, match="layer_widths has 6 entries but depth 0.5 keeps 3"):
        SubnetConfig(0.75, 0.5, None, False, (0.5, 0.75, 0.75, 0.75, 0.5, 0.5)).check_layers(6)
    with pytest.raises(InvalidSubnet, match="look it up in the profile"):
        SubnetConfig.parse_id(mixed.id)
