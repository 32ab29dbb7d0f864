"""The training loop: splits, tokenizer, model, early stopping, calibration, checkpoint."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.network import SentimentClassifier
from model.predictor import resolve_device
from model.tokenizer import TextTokenizer, words
from training.batches import EncodedSplit, encode_split
from training.data import DataError, Dataset, label_names, stratified_split
from training.distributed import DataParallel
from training.loop import Loop, predict_logits, softmax
from training.metrics import classification_report
from training.plots import training_plots
from training.resume import ResumeState
from training.warm_start import extend_tokenizer, warm_model

log = logging.getLogger(__name__)


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
    word_dropout: float = 0.2
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # per-step decay of a moving average of the weights; 0 turns it off
    vocab_size: int = 30_000
    min_frequency: int = 2
    max_length: int = 128
    glove: bool = True  # initialise embeddings from GloVe 6B 50d
    glove_words: int = 20_000  # most frequent GloVe words added to the vocabulary
    lexicon: bool = True  # each token's VADER valence as one more input (training/lexicon.py)
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
    "batch_size": 32,
    "patience": 1,
}


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    labels: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """SHA-256 of every split's texts and labels: a resumed run must see the same data."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            for text, label in zip(split.texts, split.labels, strict=True):
                digest.update(f"{label}\t{text}\n".encode())
            digest.update(b"\0")
        return digest.hexdigest()


def make_splits(
    data: Dataset, config: TrainConfig, val: Dataset | None = None, test: Dataset | None = None
) -> Splits:
    """Held-out splits from ``data`` (stratified, seeded) unless given as their own files."""
    fractions = [
        f for f, given in ((config.val_fraction, val), (config.test_fraction, test)) if given is None
    ]
    parts = stratified_split(
        data.labels, [1 - sum(fractions), *fractions], config.seed, data.groups, data.domains
    )
    train, rest = data.subset(parts[0]), [data.subset(p) for p in parts[1:]]
    val = val if val is not None else rest.pop(0)
    test = test if test is not None else rest.pop(0)
    if config.max_examples is not None:
        train = train.subset(range(min(len(train), config.max_examples)))
    labels = label_names(train.labels, train.source)
    for name, split in (("validation", val), ("test", test)):
        unseen = set(split.labels) - set(labels)
        if unseen:
            raise DataError(f"{split.source}: {name} labels {sorted(unseen)} never occur in training data")
        if len(split) == 0:
            raise DataError(f"{data.source}: too few rows for a {name} split")
    return Splits(train, val, test, labels)


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


TEMPERATURE_RANGE = (0.05, 20.0)
MIN_CALIBRATION_ROWS = 100  # below this, a fitted temperature follows a few examples, not the model


def split_warnings(splits: Splits) -> list[str]:
    """What makes a run's report or calibration untrustworthy, in words a user can act on."""
    warnings = []
    for name, split in (("validation", splits.val), ("test", splits.test)):
        missing = [label for label in splits.labels if label not in set(split.labels)]
        if missing:
            warnings.append(
                f"the {name} split has no {', '.join(map(repr, missing))} example: its report says nothing "
                "about that class; add data or pass a --val/--test file that has it"
            )
    return warnings


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature that minimises validation NLL (Guo et al. 2017)."""
    z, y = torch.from_numpy(logits).double(), torch.from_numpy(labels)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(*TEMPERATURE_RANGE))


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
    parallel: DataParallel | None = None,
) -> TrainResult:
    """Train on ``data`` and, unless ``output`` is None, save the checkpoint there atomically."""
    torch.manual_seed(config.seed)
    dev = resolve_device(device)
    splits = make_splits(data, config, val, test)
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
    loop = Loop(model, config, encoded, dev, state, progress=progress)
    if parallel is not None:  # data-parallel hook: torchrun, see training/distributed.py
        parallel.attach(loop)

    def after_epoch(loop: Loop) -> None:
        if output is not None:
            ResumeState.save(output, loop, tokenizer, fingerprint)
        if on_epoch is not None:
            on_epoch(loop)

    loop.run(after_epoch)
    model.load_state_dict(loop.best_state)

    val_logits = predict_logits(model, encoded["val"], dev)
    warnings = split_warnings(splits)
    temperature = 1.0
    if config.calibrate and len(splits.val) < MIN_CALIBRATION_ROWS:
        warnings.append(
            f"the validation split has {len(splits.val)} rows, too few to fit a calibration temperature "
            f"(at least {MIN_CALIBRATION_ROWS}): probabilities are left uncalibrated"
        )
    elif config.calibrate:
        temperature = fit_temperature(val_logits, encoded["val"].labels)
        if not TEMPERATURE_RANGE[0] < temperature < TEMPERATURE_RANGE[1]:
            warnings.append(
                f"the fitted calibration temperature {temperature:.3g} is at its bound: the validation "
                "split cannot calibrate this model; probabilities are left uncalibrated"
            )
            temperature = 1.0
    for warning in warnings:
        log.warning("warning: %s", warning)
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


def tiny(config: TrainConfig) -> TrainConfig:
    """The smoke-test preset: a very small model on a few hundred examples."""
    return replace(config, **TINY)
