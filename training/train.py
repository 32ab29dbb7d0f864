"""The training loop: splits, tokenizer, model, early stopping, calibration, checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.network import SentimentClassifier
from model.predictor import resolve_device
from model.tokenizer import TextTokenizer, words
from training.batches import EncodedSplit, encode_split
from training.calibration import calibrate
from training.config import TINY, TrainConfig, tiny
from training.data import Dataset
from training.diagnostics import data_summary, split_warnings
from training.loop import Loop, Strategy, predict_logits, softmax
from training.metrics import classification_report
from training.plots import training_plots
from training.priors import Priors, load_priors
from training.resume import ResumeState
from training.splits import Splits, make_splits
from training.warm_start import extend_tokenizer, warm_model

# Re-exported: bench/ and older callers import these from here.
__all__ = ["TINY", "Priors", "Splits", "TrainConfig", "load_priors", "make_splits", "tiny", "train"]

log = logging.getLogger(__name__)


def corpus_words(texts: list[str], config: TrainConfig, priors: Priors) -> list[str]:
    """Training words, most frequent first, kept if frequent enough or known to GloVe or the lexicon."""
    known = set(priors.glove_words) | set(priors.lexicon or ())
    return [w for w, n in words(texts).most_common() if n >= config.min_frequency or w in known]


def build_tokenizer(texts: list[str], config: TrainConfig, priors: Priors) -> TextTokenizer:
    """Vocabulary: the frequent training words, then every lexicon word and the most frequent GloVe
    words (so words unseen in training but common in English still bring a vector and a valence), then
    rarer training words that GloVe knows, up to ``vocab_size``."""
    counts = words(texts)
    frequent = [w for w, n in counts.most_common() if n >= config.min_frequency]
    rare = [w for w in corpus_words(texts, config, priors) if counts[w] < config.min_frequency]
    priority = [*frequent, *(priors.lexicon or ()), *priors.glove_words[: config.glove_words], *rare]
    vocabulary = list(dict.fromkeys(priority))[: config.vocab_size - 2]
    return TextTokenizer.from_words(vocabulary, config.max_length)


def build_model(
    config: TrainConfig, tokenizer: TextTokenizer, num_labels: int, priors: Priors | None = None
) -> SentimentClassifier:
    model = SentimentClassifier(
        ModelConfig(
            vocab_size=tokenizer.vocab_size,
            num_labels=num_labels,
            embedding_dim=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            embedding_dropout=config.embedding_dropout,
            pooling=config.pooling,  # type: ignore[arg-type]
            max_length=config.max_length,
            lexicon=config.lexicon,
            ngram_buckets=config.ngram_buckets,
            ngram_dropout=config.ngram_dropout,
        )
    )
    vocabulary, priors = tokenizer.vocabulary(), priors or Priors()
    if priors.glove_vectors is not None:
        from training.vectors import embedding_matrix

        matrix, found = embedding_matrix(vocabulary, priors.glove_words, priors.glove_vectors, config.seed)
        model.embedding.weight.data.copy_(matrix)
        model.embedding.weight.requires_grad_(not config.freeze_embeddings)
        log.info("GloVe vectors for %d of %d vocabulary words", found, tokenizer.vocab_size)
    if priors.lexicon is not None:
        from training.lexicon import lexicon_column

        model.lexicon.copy_(lexicon_column(vocabulary, priors.lexicon))
        log.info("lexicon valence for %d vocabulary words", int((model.lexicon != 0).sum()))
    return model


def encode_splits(tokenizer: TextTokenizer, splits: Splits) -> dict[str, EncodedSplit]:
    """Token ids, label indices and (where the data has domains) domain indices of every split."""
    index = {name: k for k, name in enumerate(splits.labels)}
    domains = sorted({d for s in (splits.train, splits.val, splits.test) for d in s.domains or ()})
    encoded = {}
    for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        labels = np.array([index[label] for label in split.labels])
        domain = None if split.domains is None else np.array([domains.index(d) for d in split.domains])
        encoded[name] = encode_split(tokenizer, split.texts, labels, domain)
    return encoded


def domain_reports(
    split: Dataset, encoded: EncodedSplit, probs: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """The test report of each domain, when the data has more than one."""
    names = sorted(set(split.domains or ()))
    if len(names) < 2 or encoded.domains is None:
        return {}
    return {
        name: classification_report(encoded.labels[rows], probs[rows], labels)
        for k, name in enumerate(names)
        if len(rows := np.flatnonzero(encoded.domains == k))
    }


@dataclass
class TrainResult:
    checkpoint: Checkpoint
    path: Path | None


def train(
    data: Dataset,
    config: TrainConfig,
    output: Path | None,
    *,
    val: Dataset | None = None,
    test: Dataset | None = None,
    device: str | None = None,
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch: Callable[[Loop], object] | None = None,
    parallel: Strategy | None = None,
) -> TrainResult:
    """Train on ``data`` and, unless ``output`` is None, save the checkpoint there atomically."""
    torch.manual_seed(config.seed)
    dev = resolve_device(device)
    splits = make_splits(data, config, val, test)
    warnings = split_warnings(splits, config)
    tqdm.write(data_summary(splits))
    for warning in warnings:
        tqdm.write(f"warning: {warning}")
    fingerprint = splits.fingerprint()
    state = ResumeState.load(output, config, fingerprint) if resume and output is not None else None
    priors = load_priors(config)
    base = load_checkpoint(config.init_from) if config.init_from else None
    if state is not None:
        tokenizer = TextTokenizer.from_json(state.tokenizer_json, config.max_length)
    elif base is not None:
        tokenizer = extend_tokenizer(base, corpus_words(splits.train.texts, config, priors), config)
    else:
        tokenizer = build_tokenizer(splits.train.texts, config, priors)
    encoded = encode_splits(tokenizer, splits)
    if base is not None:
        model = warm_model(base, tokenizer, splits.labels, config, priors).to(dev)
    else:
        model = build_model(config, tokenizer, len(splits.labels), priors).to(dev)
    loop = Loop(model, config, encoded, dev, progress=progress, strategy=parallel)
    if state is not None:
        state.restore(loop)

    def after_epoch(loop: Loop) -> None:
        if output is not None:
            ResumeState.save(output, loop, tokenizer, fingerprint)
        if on_epoch is not None:
            on_epoch(loop)

    loop.run(after_epoch)
    model.load_state_dict(loop.best_state)

    val_logits = predict_logits(model, encoded["val"], dev)
    temperature, calibration_warnings = calibrate(val_logits, encoded["val"].labels, config.calibrate)
    for warning in calibration_warnings:
        tqdm.write(f"warning: {warning}")
    warnings += calibration_warnings
    test_logits = predict_logits(model, encoded["test"], dev)
    metrics = {
        "test": classification_report(
            encoded["test"].labels, softmax(test_logits, temperature), splits.labels
        ),
        "test_domains": domain_reports(
            splits.test, encoded["test"], softmax(test_logits, temperature), splits.labels
        ),
        "test_uncalibrated_ece": classification_report(
            encoded["test"].labels, softmax(test_logits), splits.labels
        )["ece"],
        "validation": classification_report(
            encoded["val"].labels, softmax(val_logits, temperature), splits.labels
        ),
        "history": loop.history,
        "best_epoch": loop.best_epoch,
        "train_seconds": loop.seconds,
        "train_tokens_per_second": loop.tokens_per_second,
        "examples": {k: len(v) for k, v in encoded.items()},
        "warnings": warnings,
    }
    checkpoint = Checkpoint(
        model=model.cpu().eval(),
        tokenizer=tokenizer,
        labels=splits.labels,
        temperature=temperature,
        training=asdict(config),
        metrics=metrics,
        provenance={
            **(provenance or {}),
            "seed": config.seed,
            "device": str(dev),
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    path = None
    if output is not None:
        path = save_checkpoint(checkpoint, output, extras=lambda d: training_plots(metrics, d))
        ResumeState.discard(output)
    return TrainResult(checkpoint, path)
