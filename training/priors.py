"""Word priors loaded once per run: GloVe vectors (embedding init) and VADER valences (an input)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.config import TrainConfig


@dataclass
class Priors:
    """What a run knows about words before it sees a label: GloVe vectors and lexicon valences."""

    glove_words: list[str] = field(default_factory=list)
    glove_vectors: np.ndarray | None = None
    lexicon: dict[str, float] | None = None


def load_priors(config: TrainConfig) -> Priors:
    priors = Priors()
    if config.glove:
        from training.vectors import load_glove

        priors.glove_words, priors.glove_vectors = load_glove()
    if config.lexicon:
        from training.lexicon import load_vader

        priors.lexicon = load_vader()
    return priors
