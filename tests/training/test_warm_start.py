"""Fine-tuning from a checkpoint: the base's vocabulary, weights and matching head rows are kept."""

from __future__ import annotations

from dataclasses import replace

import torch

from model.network import SentimentClassifier
from tests.conftest import CORPUS, LABELS, tiny_checkpoint_object
from training.config import TrainConfig
from training.priors import load_priors
from training.train import corpus_words
from training.warm_start import extend_tokenizer, warm_model

CONFIG = replace(TrainConfig(), glove=False, lexicon=False, dropout=0.0, embedding_dropout=0.0)
NEW_TEXTS = ["the battery is superb", "the battery died , awful"]


def logits(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    batch = tokenizer.encode(texts)
    with torch.no_grad():
        return model.eval()(batch.ids, batch.lengths)


def test_the_vocabulary_keeps_the_base_ids_and_appends_new_words() -> None:
    base = tiny_checkpoint_object()
    words = corpus_words(NEW_TEXTS * 2, CONFIG, load_priors(CONFIG))
    tokenizer = extend_tokenizer(base, words, CONFIG)
    old = base.tokenizer.vocabulary()
    assert tokenizer.vocabulary()[: len(old)] == old
    assert {"battery", "superb"} <= set(tokenizer.vocabulary()[len(old) :])


def test_with_the_same_labels_the_warm_model_answers_as_the_base_does() -> None:
    base = tiny_checkpoint_object(seed=5)
    tokenizer = extend_tokenizer(base, ["battery", "superb"], CONFIG)
    model = warm_model(base, tokenizer, list(LABELS), CONFIG, load_priors(CONFIG))
    torch.testing.assert_close(logits(model, tokenizer, CORPUS), logits(base.model, base.tokenizer, CORPUS))


def test_a_binary_head_starts_from_the_base_rows_of_its_labels() -> None:
    base = tiny_checkpoint_object(seed=6)
    model = warm_model(base, base.tokenizer, ["negative", "positive"], CONFIG, load_priors(CONFIG))
    full = logits(base.model, base.tokenizer, CORPUS)
    torch.testing.assert_close(logits(model, base.tokenizer, CORPUS), full[:, [0, 2]])


def test_labels_the_base_lacks_start_fresh_and_the_rest_is_still_copied() -> None:
    base = tiny_checkpoint_object(seed=7)
    model = warm_model(base, base.tokenizer, ["0", "1"], CONFIG, load_priors(CONFIG))
    assert model.head.weight.shape == (2, base.model.head.weight.shape[1])
    torch.testing.assert_close(model.lstm.weight_ih_l0, base.model.lstm.weight_ih_l0)


def with_ngrams(base):  # type: ignore[no-untyped-def]
    """``base`` with n-gram weights of its own: the same network, plus random word and pair rows."""
    config = replace(base.config, ngram_buckets=32)
    model = SentimentClassifier(config).eval()
    model.load_state_dict({**base.model.state_dict(), "ngrams": torch.randn(config.vocab_size + 32, 3)})
    return replace(base, model=model)


def test_ngram_weights_are_carried_over_for_the_base_words_and_pairs() -> None:
    base = with_ngrams(tiny_checkpoint_object(seed=8))
    tokenizer = extend_tokenizer(base, ["battery", "superb"], CONFIG)
    model = warm_model(base, tokenizer, list(LABELS), CONFIG, load_priors(CONFIG))
    assert model.config.ngram_buckets == 32
    torch.testing.assert_close(logits(model, tokenizer, CORPUS), logits(base.model, base.tokenizer, CORPUS))
