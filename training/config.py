"""Every knob of a training run, in one frozen dataclass stored in the checkpoint; the --tiny preset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; stored in the checkpoint. Defaults are the shipped model's."""

    seed: int = 13
    epochs: int = 15
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 1e-2
    clip_norm: float = 1.0
    patience: int = 0  # stop after this many epochs without a better validation macro-F1; 0: never
    schedule: str = "onecycle"  # or "constant"
    word_dropout: float = 0.1
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # per-step decay of a moving average of the weights; 0 turns it off
    vocab_size: int = 30_000
    min_frequency: int = 2
    max_length: int = 128
    glove: bool = True  # initialise embeddings from GloVe 6B 50d
    glove_words: int = 20_000  # most frequent GloVe words added to the vocabulary
    lexicon: bool = True  # each token's VADER valence as one more input (training/lexicon.py)
    ngram_buckets: int = 262_144  # hash buckets of a linear word-pair model beside the LSTM; 0: no such model
    ngram_lr_scale: float = 50.0  # the n-gram weights' learning rate relative to lr
    ngram_dropout: float = 0.5  # share of training texts whose n-gram logits are dropped
    adversarial: float = 0.0  # norm of adversarial embedding perturbations (Miyato et al. 2017); 0: off
    init_from: str | None = None  # fine-tune from this checkpoint (training/warm_start.py)
    freeze_embeddings: bool = False
    embedding_lr_scale: float = 0.2  # embeddings' learning rate relative to lr
    embedding_dim: int = 50
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.5
    embedding_dropout: float = 0.3
    pooling: str = "max_mean"
    calibrate: bool = True  # fit a softmax temperature on the validation split
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_examples: int | None = None  # cap on training examples (smoke tests)

    def __post_init__(self) -> None:
        if self.glove and self.embedding_dim != 50:
            raise ValueError("GloVe vectors are 50-dimensional: use embedding_dim=50 or glove=False")
        if self.patience < 0:
            raise ValueError("patience must be at least 0 (0: run every epoch)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be at least 0 (off) and below 1")
        if not 0 < self.val_fraction + self.test_fraction < 1:
            raise ValueError("val_fraction + test_fraction must be between 0 and 1")


TINY: dict[str, Any] = {
    "epochs": 2,
    "hidden_size": 16,
    "embedding_dim": 16,
    "glove": False,
    "lexicon": False,
    "max_examples": 400,
    "vocab_size": 2_000,
    "ngram_buckets": 1_024,
    "batch_size": 32,
    "patience": 1,
}


def tiny(config: TrainConfig) -> TrainConfig:
    """The smoke-test preset: a very small model on a few hundred examples."""
    return replace(config, **TINY)
