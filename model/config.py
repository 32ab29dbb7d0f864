"""Hyperparameters of the classifier: everything needed to rebuild the network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Pooling = Literal["max", "mean", "max_mean", "last"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an embedding -> BiLSTM -> pooling -> linear classifier."""

    vocab_size: int
    num_labels: int
    embedding_dim: int = 50
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5  # before the head, and between stacked LSTM layers
    embedding_dropout: float = 0.3
    pooling: Pooling = "max_mean"
    pad_id: int = 0
    max_length: int = 128
    # One more input per token beside its embedding: the word's prior valence from a sentiment
    # lexicon (VADER's, scaled to [-1, 1]; 0 for words it lacks), stored in the weights file.
    lexicon: bool = False
    # A linear model of the text's words and hashed word pairs beside the LSTM, its logits added to the
    # head's ("wide and deep"); this many hash buckets for the pairs, 0: none.
    ngram_buckets: int = 0
    # In training, the share of texts whose n-gram logits are dropped, so that the LSTM learns to
    # answer alone too and does not leave to the n-grams what it should learn itself.
    ngram_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.num_labels < 2:
            raise ValueError("vocab_size and num_labels must both be at least 2")
        if self.pooling not in ("max", "mean", "max_mean", "last"):
            raise ValueError(f"unknown pooling {self.pooling!r}")
        if self.ngram_buckets < 0:
            raise ValueError("ngram_buckets must be at least 0 (0: no n-gram features)")
        for name in ("dropout", "embedding_dropout", "ngram_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")

    @property
    def input_size(self) -> int:
        """Width of one LSTM input step: the embedding, plus the lexicon value when there is one."""
        return self.embedding_dim + (1 if self.lexicon else 0)

    @property
    def encoder_size(self) -> int:
        """Width of one LSTM output step: H, or 2H when bidirectional."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict``'s output, refusing unknown keys and values of the wrong type."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        for name, value in data.items():
            kind = str(known[name])
            if not isinstance(value, TYPES.get(kind, str)) or (kind != "bool" and isinstance(value, bool)):
                raise ValueError(f"{name} must be {TYPE_NAMES.get(kind, 'a string')}, got {value!r}")
        return cls(**data)


# The JSON types of ModelConfig's fields, by their annotation.
TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool}
TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false"}
