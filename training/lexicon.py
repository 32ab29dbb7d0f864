"""The VADER sentiment lexicon (Hutto & Gilbert 2014, MIT) as a per-token input of the model.

Each of its ~7,500 entries is a word or emoticon with a mean valence rated by 10 people on -4..4. The
model reads it scaled to [-1, 1] beside each token's embedding; the checkpoint stores the value of each
vocabulary word (``SentimentClassifier.lexicon``), so serving never needs this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from model.tokenizer import TextTokenizer
from training.corpus import HUTTO, fetch

SCALE = 4.0  # the lexicon's ratings run from -4 to 4


def load_vader() -> dict[str, float]:
    """The VADER lexicon, fetched on first use."""
    return read_lexicon(fetch(HUTTO).joinpath("vader_lexicon.txt"))


def read_lexicon(path: Path) -> dict[str, float]:
    """``entry<TAB>mean rating<TAB>...`` per line: the entries that the tokenizer keeps as one token, by
    their normalised form, with their valence in [-1, 1]."""
    splitter = TextTokenizer.from_words([], max_length=8).tokenizer
    lexicon: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry, _, rest = line.partition("\t")
        if not rest:
            continue
        normal = splitter.normalizer.normalize_str(entry)  # type: ignore[union-attr]
        pieces = splitter.pre_tokenizer.pre_tokenize_str(normal)  # type: ignore[union-attr]
        if len(pieces) == 1:
            lexicon.setdefault(pieces[0][0], float(rest.split("\t")[0]) / SCALE)
    return lexicon


def lexicon_column(vocabulary: Sequence[str], lexicon: dict[str, float]) -> torch.Tensor:
    """(V, 1) valence of each vocabulary word, 0 where the lexicon has none."""
    return torch.tensor([[lexicon.get(word, 0.0)] for word in vocabulary], dtype=torch.float32)
