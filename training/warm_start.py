"""Fine-tuning from a trained checkpoint (``--init-from``) instead of training from scratch.

The new model keeps the base's architecture, vocabulary (with the new data's words appended),
embeddings, lexicon and LSTM; each output of the head (and column of the n-gram weights) whose
label the base also has starts from the base's, and the others start fresh. Useful to adapt a model
to a new domain with the same labels; on binary movie sentences it did worse than training from
scratch (docs/quality.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from model.checkpoint import Checkpoint
from model.network import SentimentClassifier
from model.tokenizer import TextTokenizer
from training.config import TrainConfig
from training.priors import Priors

log = logging.getLogger(__name__)


def extend_tokenizer(base: Checkpoint, new_words: list[str], config: TrainConfig) -> TextTokenizer:
    """The base's vocabulary in its order, then up to ``config.vocab_size`` words it lacks."""
    known = base.tokenizer.vocabulary()
    seen = set(known)
    added = [w for w in new_words if w not in seen][: config.vocab_size]
    return TextTokenizer.from_words(known[2:] + added, base.config.max_length)


def warm_model(
    base: Checkpoint, tokenizer: TextTokenizer, labels: list[str], config: TrainConfig, priors: Priors
) -> SentimentClassifier:
    """The base network resized to ``tokenizer``'s vocabulary and to ``labels``, its weights copied."""
    model_config = replace(
        base.config,
        vocab_size=tokenizer.vocab_size,
        num_labels=len(labels),
        dropout=config.dropout,
        embedding_dropout=config.embedding_dropout,
        ngram_dropout=config.ngram_dropout,
    )
    model = SentimentClassifier(model_config)
    with torch.no_grad():
        _copy_inputs(base.model, model, priors, tokenizer)
        model.lstm.load_state_dict(base.model.lstm.state_dict())
        _copy_head(base, model, labels)
    model.embedding.weight.requires_grad_(not config.freeze_embeddings)
    return model


def _copy_inputs(
    old: SentimentClassifier, new: SentimentClassifier, priors: Priors, tokenizer: TextTokenizer
) -> None:
    """Embedding rows (and lexicon values) of the base's words; GloVe or the lexicon for the new ones."""
    rows = old.config.vocab_size
    vocabulary = tokenizer.vocabulary()
    if priors.glove_vectors is not None and new.config.embedding_dim == priors.glove_vectors.shape[1]:
        from training.vectors import embedding_matrix

        matrix, _ = embedding_matrix(vocabulary, priors.glove_words, priors.glove_vectors, seed=0)
        new.embedding.weight.copy_(matrix)
    new.embedding.weight[:rows] = old.embedding.weight
    if new.config.lexicon:
        new.lexicon[:rows] = old.lexicon
        if priors.lexicon is not None:
            from training.lexicon import lexicon_column

            new.lexicon[rows:] = lexicon_column(vocabulary[rows:], priors.lexicon)
    log.info("fine-tuning from a %d-word vocabulary, %d words added", rows, len(vocabulary) - rows)


def _copy_head(base: Checkpoint, new: SentimentClassifier, labels: list[str]) -> None:
    shared = [label for label in labels if label in base.labels]
    for label in shared:
        old_row, new_row = base.labels.index(label), labels.index(label)
        new.head.weight[new_row] = base.model.head.weight[old_row]
        new.head.bias[new_row] = base.model.head.bias[old_row]
        if base.config.ngram_buckets:  # word rows keep their ids; pair rows follow the vocabulary
            words, pairs = base.config.vocab_size, new.config.vocab_size
            new.ngrams[:words, new_row] = base.model.ngrams[:words, old_row]
            new.ngrams[pairs:, new_row] = base.model.ngrams[words:, old_row]
    log.info("head rows from the base model: %s", ", ".join(shared) or "none (labels differ)")
