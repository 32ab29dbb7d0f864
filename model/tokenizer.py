"""Word-level tokenizer (HF ``tokenizers``) whose units match GloVe's words.

Normalisation: Unicode NFKC, lower case, URLs -> ``<url>``, @mentions -> ``<user>`` (so the model
learns nothing about particular accounts). Pre-tokenisation follows the Penn Treebank conventions that
GloVe was trained on: ``don't`` -> ``do n't``, ``it's`` -> ``it 's``, runs of punctuation kept whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
URL, USER = "<url>", "<user>"
WORD_PATTERN = r"<url>|<user>|\w+(?=n't\b)|n't\b|'\w+|\w+|[^\w\s]+"


@dataclass
class Batch:
    """Token ids of a batch of texts, right-padded, with their lengths."""

    ids: torch.Tensor  # (B, T) int64
    lengths: torch.Tensor  # (B,) int64, each >= 1
    truncated: list[bool]


def _pipeline(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"https?://\S+|www\.\S+"), f" {URL} "),
            normalizers.Replace(Regex(r"@\w+"), f" {USER} "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True)
    return tokenizer


def words(texts: Iterable[str]) -> Counter[str]:
    """Count the normalised words of ``texts`` exactly as the tokenizer will see them."""
    splitter = _pipeline({PAD: PAD_ID, UNK: UNK_ID})
    counts: Counter[str] = Counter()
    for text in texts:
        normal = splitter.normalizer.normalize_str(text)  # type: ignore[union-attr]
        counts.update(w for w, _ in splitter.pre_tokenizer.pre_tokenize_str(normal))  # type: ignore[union-attr]
    return counts


class TextTokenizer:
    """Texts -> padded id tensors; wraps a ``tokenizers.Tokenizer`` saved as ``tokenizer.json``."""

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        if tokenizer.token_to_id(PAD) != PAD_ID or tokenizer.token_to_id(UNK) != UNK_ID:
            raise ValueError(f"tokenizer must map {PAD} to {PAD_ID} and {UNK} to {UNK_ID}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        # Cut and padded in ``encode``: in Rust each costs a Python list per text (ids, mask, overflow).
        tokenizer.no_truncation()
        tokenizer.no_padding()

    @classmethod
    def from_words(cls, vocabulary: Sequence[str], max_length: int) -> TextTokenizer:
        """Build from a word list; ids follow the list's order after ``[PAD]`` and ``[UNK]``."""
        vocab = {PAD: PAD_ID, UNK: UNK_ID}
        for word in vocabulary:
            vocab.setdefault(word, len(vocab))
        return cls(_pipeline(vocab), max_length)

    @classmethod
    def train(
        cls, texts: Iterable[str], max_length: int, vocab_size: int = 30_000, min_frequency: int = 2
    ) -> TextTokenizer:
        """Keep the ``vocab_size`` most frequent words seen at least ``min_frequency`` times."""
        counts = words(texts)
        common = [w for w, n in counts.most_common(vocab_size - 2) if n >= min_frequency]
        return cls.from_words(common, max_length)

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)), max_length)

    @classmethod
    def from_json(cls, text: str, max_length: int) -> TextTokenizer:
        return cls(Tokenizer.from_str(text), max_length)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def vocabulary(self) -> list[str]:
        """Words ordered by id."""
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def encode(self, texts: Sequence[str]) -> Batch:
        """Tokenise in one Rust call (no offsets: ``encode_batch_fast``), then cut and pad in numpy."""
        rows = [e.ids for e in self.tokenizer.encode_batch_fast(list(texts))]
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        truncated = (lengths > self.max_length).tolist()
        # An empty text still runs as one [PAD] step, so every row has a defined output.
        np.clip(lengths, 1, self.max_length, out=lengths)
        ids = np.zeros((len(rows), int(lengths.max()) if rows else 1), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row[: self.max_length]
        return Batch(torch.from_numpy(ids), torch.from_numpy(lengths), truncated)
