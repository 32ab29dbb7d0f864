"""Pretrained GloVe vectors: pick the rows a vocabulary needs, so checkpoints stay small."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from model.tokenizer import PAD_ID, UNK_ID
from training.corpus import GLOVE, fetch


def load_glove() -> tuple[list[str], np.ndarray]:
    """GloVe 6B 50d: 400k words, most frequent first, and their (400000, 50) float32 vectors."""
    directory = fetch(GLOVE)
    words = pd.read_parquet(directory / "words.parquet")["index"].astype(str).tolist()
    vectors = np.load(directory / "vectors.npy", mmap_mode="r")
    if len(words) != vectors.shape[0]:
        raise ValueError(f"GloVe words ({len(words)}) and vectors ({vectors.shape[0]}) disagree")
    return words, vectors


def embedding_matrix(
    vocabulary: Sequence[str], glove_words: Sequence[str], glove_vectors: np.ndarray, seed: int
) -> tuple[torch.Tensor, int]:
    """(V, D) initial embeddings: GloVe where the word has one, small noise elsewhere, zero for PAD.

    Returns the matrix and how many words were found in GloVe.
    """
    index = {w: i for i, w in enumerate(glove_words)}
    rows = np.array([index.get(w, -1) for w in vocabulary])
    found = rows >= 0
    rng = np.random.default_rng(seed)
    scale = float(np.asarray(glove_vectors[:10_000]).std())
    matrix = rng.normal(0.0, scale, (len(vocabulary), glove_vectors.shape[1])).astype(np.float32)
    matrix[found] = glove_vectors[rows[found]]
    matrix[PAD_ID] = 0.0
    matrix[UNK_ID] = 0.0  # an unknown word contributes nothing, instead of a random direction
    return torch.from_numpy(matrix), int(found.sum())
