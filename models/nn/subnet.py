"""The sub-network: which part of the dynamic transformer one forward pass runs.

A sub-network is a width multiplier (DynaBERT: the first heads and FFN neurons of every layer),
optionally a different one of the trained widths per kept layer, a depth multiplier (DynaBERT's
layer-selection rule) and optionally per-layer sequence lengths (LAT's Drop-and-Restore), given
as ratios of each input's real length so one configuration serves inputs of any length.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from models.errors import InvalidSubnet

WIDTHS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
DEPTHS: tuple[float, ...] = (1.0, 0.75, 0.5)

_ID_PATTERN = re.compile(r"^w(\d{1,3})d(\d{1,3})(-v[0-9a-f]{6})?(-l[0-9a-f]{6})?(-q8)?$")


def kept_layer_count(num_layers: int, depth: float) -> int:
    """Number of layers a depth multiplier keeps: round half up, at least one."""
    return max(1, math.floor(num_layers * depth + 0.5))


def kept_layers(num_layers: int, depth: float) -> tuple[int, ...]:
    """DynaBERT's depth rule: keep layer floor(i / d) for i < round(L * d).

    d = 0.5 keeps every other layer (0, 2, 4, ...); d = 0.75 on 6 layers keeps 0, 1, 2, 4, 5.
    """
    return tuple(math.floor(i / depth + 1e-9) for i in range(kept_layer_count(num_layers, depth)))


def kept_heads(num_heads: int, width: float) -> int:
    """Heads kept at a width multiplier: the first round(H * w) after rewiring."""
    return max(1, math.floor(num_heads * width + 0.5))


def kept_neurons(num_heads: int, intermediate_size: int, width: float) -> int:
    """FFN neurons kept: the same fraction of the FFN as of the heads (DynaBERT)."""
    return kept_heads(num_heads, width) * intermediate_size // num_heads


@dataclass(frozen=True)
class SubnetConfig:
    """One sub-network of the dynamic checkpoint. Frozen and hashable: usable as a dict key.

    `lengths[i]` is the fraction of the input's real tokens still kept after the i-th *kept*
    layer; the list is non-increasing and each ratio lies in (0, 1]. `quantized` selects the
    INT8 copy of the linear layers where the checkpoint provides one.

    `layer_widths[i]`, where given, is the width of the i-th kept layer, and `width` is then the
    widest of them. Why per layer: on the shipped checkpoint the first and the last two layers
    lose almost nothing at width 0.5 while the middle ones need 0.75 (README, "Widths per
    layer"), so mixing the trained widths finds points between two uniform widths that neither
    reaches. All-equal widths are stored as None, so a uniform sub-network has one identity.
    """

    width: float = 1.0
    depth: float = 1.0
    lengths: tuple[float, ...] | None = None
    quantized: bool = False
    layer_widths: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.width not in WIDTHS:
            raise InvalidSubnet(f"width {self.width!r} is not one of {list(WIDTHS)}")
        if self.depth not in DEPTHS:
            raise InvalidSubnet(f"depth {self.depth!r} is not one of {list(DEPTHS)}")
        if self.layer_widths is not None:
            widths = tuple(float(w) for w in self.layer_widths)
            for i, w in enumerate(widths):
                if w not in WIDTHS:
                    raise InvalidSubnet(f"layer_widths[{i}] = {w!r} is not one of {list(WIDTHS)}")
            if not widths or max(widths) != self.width:
                raise InvalidSubnet(
                    f"width {self.width} must be the widest of layer_widths {list(widths)} (it names the sub-network)"
                )
            object.__setattr__(self, "layer_widths", None if min(widths) == max(widths) else widths)
        if self.lengths is not None:
            lengths = tuple(float(r) for r in self.lengths)
            if not lengths:
                raise InvalidSubnet("lengths must not be empty (use None for no length reduction)")
            for i, ratio in enumerate(lengths):
                if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
                    raise InvalidSubnet(f"lengths[{i}] = {ratio} is not a ratio in (0, 1] of the input length")
            for i in range(1, len(lengths)):
                if lengths[i] > lengths[i - 1]:
                    raise InvalidSubnet(
                        f"lengths must be non-increasing: lengths[{i}] = {lengths[i]} > "
                        f"lengths[{i - 1}] = {lengths[i - 1]}"
                    )
            # Rounded so that ids and equality do not depend on float noise from a search.
            object.__setattr__(self, "lengths", tuple(round(r, 4) for r in lengths))

    @property
    def id(self) -> str:
        """Short stable id for labels and headers, e.g. `w50d75` or `w100d100-l3fa9c1`."""
        text = f"w{round(self.width * 100)}d{round(self.depth * 100)}"
        for tag, values in (("v", self.layer_widths), ("l", self.lengths)):
            if values is not None:
                digest = hashlib.sha1(",".join(f"{r:.4f}" for r in values).encode()).hexdigest()
                text += f"-{tag}{digest[:6]}"
        if self.quantized:
            text += "-q8"
        return text

    def check_layers(self, num_layers: int) -> None:
        """Raise unless `lengths` and `layer_widths` have exactly one entry per layer this depth keeps."""
        expected = kept_layer_count(num_layers, self.depth)
        for name, values in (("lengths", self.lengths), ("layer_widths", self.layer_widths)):
            if values is not None and len(values) != expected:
                raise InvalidSubnet(
                    f"{name} has {len(values)} entries but depth {self.depth} keeps "
                    f"{expected} of {num_layers} layers: give one per kept layer"
                )

    def widths(self, num_layers: int) -> tuple[float, ...]:
        """The width of each kept layer."""
        return self.layer_widths or (self.width,) * kept_layer_count(num_layers, self.depth)

    def to_dict(self) -> dict[str, object]:
        """Plain data; `layer_widths` only where set, so a uniform sub-network's dict (and the
        keys studies and profiles recorded before per-layer widths existed) stays as it was."""
        data: dict[str, object] = {
            "id": self.id,
            "width": self.width,
            "depth": self.depth,
            "lengths": list(self.lengths) if self.lengths is not None else None,
            "quantized": self.quantized,
        }
        if self.layer_widths is not None:
            data["layer_widths"] = list(self.layer_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SubnetConfig:
        try:
            lengths, widths = data.get("lengths"), data.get("layer_widths")
            return cls(
                width=float(data["width"]),  # type: ignore[arg-type]
                depth=float(data["depth"]),  # type: ignore[arg-type]
                lengths=tuple(lengths) if lengths is not None else None,  # type: ignore[arg-type]
                quantized=bool(data.get("quantized", False)),
                layer_widths=tuple(widths) if widths is not None else None,  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidSubnet):
                raise
            raise InvalidSubnet(f"malformed sub-network {data!r}: {exc}") from exc

    @classmethod
    def parse_id(cls, text: str) -> SubnetConfig:
        """Parse a width x depth id (`w50d75`). Ids with lengths need the profile to resolve."""
        match = _ID_PATTERN.match(text)
        if match is None:
            raise InvalidSubnet(f"{text!r} is not a sub-network id (expected e.g. 'w50d75')")
        if match.group(3) or match.group(4):
            raise InvalidSubnet(f"{text!r} has per-layer widths or lengths: look it up in the profile")
        return cls(int(match.group(1)) / 100, int(match.group(2)) / 100, None, bool(match.group(5)))


def parse_lengths(text: str, option: str = "--lengths") -> tuple[float, ...]:
    """Parse `0.9,0.8,0.7` from a command line's `option` into numbers, with a clear error."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise InvalidSubnet(f"{option} {text!r} must be comma-separated numbers, e.g. 0.9,0.8") from exc


def grid() -> list[SubnetConfig]:
    """The width x depth grid at full length, largest first."""
    return [SubnetConfig(w, d) for w in WIDTHS for d in DEPTHS]
