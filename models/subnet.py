"""The sub-network: which part of the dynamic transformer one forward pass runs.

A sub-network is a width multiplier (DynaBERT: the first heads and FFN neurons of every layer),
a depth multiplier (DynaBERT's layer-selection rule) and optionally per-layer sequence lengths
(LAT's Drop-and-Restore), given as ratios of each input's real length so one configuration serves
inputs of any length.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from models.errors import InvalidSubnet

WIDTHS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
DEPTHS: tuple[float, ...] = (1.0, 0.75, 0.5)

_ID_PATTERN = re.compile(r"^w(\d{1,3})d(\d{1,3})(?:-l([0-9a-f]{6}))?(-q8)?$")


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
    """

    width: float = 1.0
    depth: float = 1.0
    lengths: tuple[float, ...] | None = None
    quantized: bool = False

    def __post_init__(self) -> None:
        if self.width not in WIDTHS:
            raise InvalidSubnet(f"width {self.width!r} is not one of {list(WIDTHS)}")
        if self.depth not in DEPTHS:
            raise InvalidSubnet(f"depth {self.depth!r} is not one of {list(DEPTHS)}")
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
        if self.lengths is not None:
            digest = hashlib.sha1(",".join(f"{r:.4f}" for r in self.lengths).encode()).hexdigest()
            text += f"-l{digest[:6]}"
        if self.quantized:
            text += "-q8"
        return text

    def check_layers(self, num_layers: int) -> None:
        """Raise unless `lengths` has exactly one entry per layer this depth keeps."""
        if self.lengths is not None:
            expected = kept_layer_count(num_layers, self.depth)
            if len(self.lengths) != expected:
                raise InvalidSubnet(
                    f"lengths has {len(self.lengths)} entries but depth {self.depth} keeps "
                    f"{expected} of {num_layers} layers: give one ratio per kept layer"
                )

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "width": self.width,
            "depth": self.depth,
            "lengths": list(self.lengths) if self.lengths is not None else None,
            "quantized": self.quantized,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SubnetConfig:
        try:
            lengths = data.get("lengths")
            return cls(
                width=float(data["width"]),  # type: ignore[arg-type]
                depth=float(data["depth"]),  # type: ignore[arg-type]
                lengths=tuple(lengths) if lengths is not None else None,  # type: ignore[arg-type]
                quantized=bool(data.get("quantized", False)),
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
        if match.group(3):
            raise InvalidSubnet(f"{text!r} has a length configuration: look it up in the profile")
        return cls(int(match.group(1)) / 100, int(match.group(2)) / 100, None, bool(match.group(4)))


def parse_lengths(text: str) -> tuple[float, ...]:
    """Parse `0.9,0.8,0.7` from a command line into ratios, with a clear error."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise InvalidSubnet(f"--lengths {text!r} must be comma-separated ratios, e.g. 0.9,0.8") from exc


def grid() -> list[SubnetConfig]:
    """The width x depth grid at full length, largest first."""
    return [SubnetConfig(w, d) for w in WIDTHS for d in DEPTHS]
