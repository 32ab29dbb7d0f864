"""TextTokenizer: normalisation, Penn Treebank splitting, special ids, truncation, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from model.tokenizer import PAD, PAD_ID, UNK, UNK_ID, TextTokenizer, words

FULLWIDTH_HELLO = "\uff28\uff25\uff2c\uff2c\uff2f"  # "HELLO" in full-width letters


def tokens(text: str) -> list[str]:
    """The words the tokenizer sees, in order, repeats kept."""
    pipeline = TextTokenizer.from_words([], max_length=8).tokenizer
    normal = pipeline.normalizer.normalize_str(text)  # type: ignore[union-attr]
    return [w for w, _ in pipeline.pre_tokenizer.pre_tokenize_str(normal)]  # type: ignore[union-attr]


def test_nfkc_and_lower_case() -> None:
    # Full-width letters and the "fi" ligature fold to ASCII under NFKC; accents survive lower-casing.
    assert tokens(f"{FULLWIDTH_HELLO} \ufb01ne ÉTÉ") == ["hello", "fine", "été"]


def test_urls_and_mentions_are_replaced() -> None:
    text = "see https://example.com/a?b=1 and www.example.org, thanks @Bob_99!"
    assert tokens(text) == ["see", "<url>", "and", "<url>", "thanks", "<user>", "!"]


def test_penn_treebank_contractions_and_punctuation() -> None:
    assert tokens("Don't stop") == ["do", "n't", "stop"]
    assert tokens("It's great!!!") == ["it", "'s", "great", "!!!"]
    assert tokens("can't, won't") == ["ca", "n't", ",", "wo", "n't"]


def test_words_counts_across_texts() -> None:
    counts = words(["a b a", "B c"])
    assert counts == {"a": 2, "b": 2, "c": 1}


def test_pad_and_unk_ids() -> None:
    tokenizer = TextTokenizer.from_words(["good", "bad"], max_length=8)
    assert tokenizer.tokenizer.token_to_id(PAD) == PAD_ID == 0
    assert tokenizer.tokenizer.token_to_id(UNK) == UNK_ID == 1
    assert tokenizer.vocabulary() == [PAD, UNK, "good", "bad"]
    batch = tokenizer.encode(["good zebra bad", "bad"])
    assert batch.ids.tolist() == [[2, 1, 3], [3, PAD_ID, PAD_ID]]
    assert batch.lengths.tolist() == [3, 1]
    assert batch.ids.dtype == batch.lengths.dtype == torch.int64


def test_from_words_keeps_order_and_drops_repeats() -> None:
    tokenizer = TextTokenizer.from_words(["b", "a", "b", PAD], max_length=4)
    assert tokenizer.vocabulary() == [PAD, UNK, "b", "a"]
    assert tokenizer.vocab_size == 4


def test_train_keeps_frequent_words_within_the_vocabulary_size() -> None:
    texts = ["the cat", "the dog", "the cat sat"]
    assert TextTokenizer.train(texts, 8, min_frequency=2).vocabulary() == [PAD, UNK, "the", "cat"]
    assert TextTokenizer.train(texts, 8, vocab_size=3, min_frequency=1).vocabulary() == [PAD, UNK, "the"]


def test_normalisation_applies_when_encoding() -> None:
    tokenizer = TextTokenizer.from_words(["do", "n't", "<url>", "<user>", "hello"], max_length=8)
    assert tokenizer.encode([f"{FULLWIDTH_HELLO} @someone, DON'T http://x.y"]).ids.tolist() == [
        [6, 5, 1, 2, 3, 4]
    ]


def test_max_length_truncates_and_flags() -> None:
    tokenizer = TextTokenizer.from_words(list("abcdef"), max_length=3)
    batch = tokenizer.encode(["a b c d e", "a b c", "a"])
    assert batch.ids.shape == (3, 3)
    assert batch.ids[0].tolist() == [2, 3, 4]
    assert batch.lengths.tolist() == [3, 3, 1]
    assert batch.truncated == [True, False, False]


def test_empty_text_is_one_pad_step() -> None:
    tokenizer = TextTokenizer.from_words(["a"], max_length=4)
    batch = tokenizer.encode(["a a", ""])
    assert batch.ids[1].tolist() == [PAD_ID, PAD_ID]
    assert batch.lengths.tolist() == [2, 1]
    only_empty = tokenizer.encode(["", "   "])
    assert only_empty.ids.tolist() == [[PAD_ID], [PAD_ID]]
    assert only_empty.lengths.tolist() == [1, 1]
    assert only_empty.truncated == [False, False]


def test_empty_batch() -> None:
    batch = TextTokenizer.from_words(["a"], max_length=4).encode([])
    assert batch.ids.shape == (0, 1)
    assert batch.lengths.shape == (0,)
    assert batch.truncated == []


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tokenizer = TextTokenizer.train(["Don't visit https://x.org, @ann!", "fine day"], 5, min_frequency=1)
    tokenizer.save(tmp_path / "tokenizer.json")
    texts = ["DON'T visit @bob", "a fine https://y.z day !", ""]
    for loaded in (
        TextTokenizer.from_file(tmp_path / "tokenizer.json", max_length=5),
        TextTokenizer.from_json(tokenizer.to_json(), max_length=5),
    ):
        assert loaded.vocabulary() == tokenizer.vocabulary()
        want, got = tokenizer.encode(texts), loaded.encode(texts)
        assert torch.equal(got.ids, want.ids) and torch.equal(got.lengths, want.lengths)


def test_rejects_a_vocabulary_without_pad_and_unk_first() -> None:
    bare = Tokenizer(WordLevel({UNK: 0, PAD: 1}, unk_token=UNK))
    with pytest.raises(ValueError, match="must map"):
        TextTokenizer(bare, max_length=4)
