"""Flat token storage, length-bucketed batches and collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import training.batches as batches_module
from model.tokenizer import PAD_ID, UNK_ID, TextTokenizer
from training.batches import bucketed_batches, collate, encode_split

WORDS = ["a", "b", "c", "d", "e"]
TEXTS = ["a b c", "d", "", "e e e e e e e e", "b a", "c d e a", "a", "b b b b b"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.from_words(WORDS, max_length=6)


@pytest.fixture(scope="module")
def split(tokenizer: TextTokenizer) -> batches_module.EncodedSplit:
    return encode_split(tokenizer, TEXTS, np.arange(len(TEXTS)) % 3)


def test_encode_split_stores_texts_end_to_end(split: batches_module.EncodedSplit) -> None:
    assert split.lengths.tolist() == [3, 1, 1, 6, 2, 4, 1, 5]  # "" is one [PAD]; max_length truncates
    assert split.offsets.tolist() == [0, 3, 4, 5, 11, 13, 17, 18]
    assert split.flat[:5].tolist() == [2, 3, 4, 5, PAD_ID]
    assert split.tokens == len(split.flat) == 23
    assert len(split) == len(TEXTS)
    assert split.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_chunked_encoding_is_the_same(tokenizer: TextTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = encode_split(tokenizer, TEXTS, np.zeros(len(TEXTS)))
    monkeypatch.setattr(batches_module, "ENCODE_CHUNK", 3)  # chunks padded to different widths
    chunked = encode_split(tokenizer, TEXTS, np.zeros(len(TEXTS)))
    for name in ("flat", "offsets", "lengths"):
        assert np.array_equal(getattr(chunked, name), getattr(whole, name)), name


def test_collate_rebuilds_the_tokenizers_batch(
    tokenizer: TextTokenizer, split: batches_module.EncodedSplit
) -> None:
    rows = np.array([5, 0, 1, 7])
    ids, lengths, labels = collate(split, rows)
    expected = tokenizer.encode([TEXTS[i] for i in rows])
    assert torch.equal(ids, expected.ids)
    assert torch.equal(lengths, expected.lengths)
    assert labels.tolist() == [2, 0, 1, 1]
    assert ids.dtype == lengths.dtype == labels.dtype == torch.int64


def test_collate_of_the_last_row(split: batches_module.EncodedSplit) -> None:
    # Its offsets run to the end of ``flat``: nothing may index past it.
    ids, lengths, _ = collate(split, np.array([len(TEXTS) - 1, 1]))
    assert ids.tolist() == [[3, 3, 3, 3, 3], [5, PAD_ID, PAD_ID, PAD_ID, PAD_ID]]
    assert lengths.tolist() == [5, 1]


def test_word_dropout_replaces_only_real_tokens(split: batches_module.EncodedSplit) -> None:
    rows = np.arange(len(TEXTS))
    clean, lengths, _ = collate(split, rows)
    mask = torch.arange(clean.shape[1])[None, :] < lengths[:, None]
    dropped, _, _ = collate(split, rows, word_dropout=1.0, rng=np.random.default_rng(0))
    assert torch.equal(dropped[mask], torch.full_like(clean[mask], UNK_ID))
    assert torch.equal(dropped[~mask], clean[~mask])
    # Without an rng (evaluation) there is no dropout.
    assert torch.equal(collate(split, rows, word_dropout=1.0)[0], clean)


def test_word_dropout_rate(tokenizer: TextTokenizer) -> None:
    big = encode_split(tokenizer, ["a b c d e a"] * 2000, np.zeros(2000))
    ids, _, _ = collate(big, np.arange(2000), word_dropout=0.25, rng=np.random.default_rng(0))
    assert (ids == UNK_ID).float().mean().item() == pytest.approx(0.25, abs=0.01)


def covers_every_row_once(batches: list[np.ndarray], n: int) -> bool:
    return sorted(np.concatenate(batches).tolist()) == list(range(n))


def test_evaluation_batches_are_sorted_by_length(split: batches_module.EncodedSplit) -> None:
    batches = list(bucketed_batches(split, batch_size=3, rng=None))
    assert covers_every_row_once(batches, len(TEXTS))
    assert all(len(b) <= 3 for b in batches)
    lengths = split.lengths[np.concatenate(batches)]
    assert lengths.tolist() == sorted(lengths.tolist())


def test_training_batches_are_shuffled_reproducibly() -> None:
    rng_lengths = np.random.default_rng(1).integers(1, 40, size=500)
    offsets = np.concatenate([[0], np.cumsum(rng_lengths)[:-1]])
    split = batches_module.EncodedSplit(
        np.ones(rng_lengths.sum(), np.int64), offsets, rng_lengths, np.zeros(500, np.int64)
    )
    first = list(bucketed_batches(split, 16, np.random.default_rng(3), bucket_batches=4))
    again = list(bucketed_batches(split, 16, np.random.default_rng(3), bucket_batches=4))
    other = list(bucketed_batches(split, 16, np.random.default_rng(4), bucket_batches=4))
    assert covers_every_row_once(first, 500)
    assert all(len(b) <= 16 for b in first)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))
    # Within a bucket rows are sorted by length, so a batch spans far less than the whole range.
    spread = np.mean([np.ptp(rng_lengths[b]) for b in first])
    assert spread < np.ptp(rng_lengths) / 2
