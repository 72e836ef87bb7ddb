"""Architecture of the dynamic BERT: the shapes every module is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from models.errors import CheckpointError


@dataclass(frozen=True)
class ArchConfig:
    """BERT encoder shapes (names as in BERT's config.json, so a plain BERT config reads in)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise CheckpointError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.intermediate_size % self.num_attention_heads:
            raise CheckpointError(
                f"intermediate_size {self.intermediate_size} must split evenly over "
                f"{self.num_attention_heads} heads for width slicing"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value <= 0 and f.name != "pad_token_id":
                raise CheckpointError(f"config field {f.name} must be positive, got {value}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ArchConfig:
        """Read the fields we know from a (possibly larger) BERT config; reject wrong types."""
        known = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for name in known:
            if name in data:
                value = data[name]
                expected = float if name.endswith(("eps", "prob")) else int
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise CheckpointError(f"config field {name} must be a number, got {value!r}")
                kwargs[name] = expected(value)
        return cls(**kwargs)  # type: ignore[arg-type]
