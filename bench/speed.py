"""Training speed: our pipeline against a plain reference loop, same model, in alternating rounds."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from model.network import SentimentClassifier
from model.tokenizer import PAD_ID
from training.batches import EncodedSplit, bucketed_batches, collate
from training.train import Splits, TrainConfig, build_model, build_tokenizer, encode_splits, load_priors


def plain_forward(model: SentimentClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The same modules run the naive way: the LSTM steps through every padded position."""
    x = model.embedding_dropout(model.embedding(ids))
    if model.use_lexicon:
        x = torch.cat([x, model.lexicon[ids]], dim=-1)
    states, _ = model.lstm(x)  # (B, T, 2H)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
    mean = states.masked_fill(~mask, 0.0).sum(1) / lengths[:, None]
    maximum = states.masked_fill(~mask, float("-inf")).amax(1)
    return model.head(model.head_dropout(torch.cat([maximum, mean], dim=-1)))


Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids, lengths, labels


def reference_batches(split: EncodedSplit, config: TrainConfig, rng: np.random.Generator) -> Iterator[Step]:
    """Shuffled batches, each padded to max_length by a Python loop: what a first attempt looks like."""
    order = rng.permutation(len(split))
    for start in range(0, len(order), config.batch_size):
        rows = order[start : start + config.batch_size]
        padded = []
        for r in rows:
            seq = split.flat[split.offsets[r] : split.offsets[r] + split.lengths[r]].tolist()
            padded.append(seq + [PAD_ID] * (config.max_length - len(seq)))
        yield (
            torch.tensor(padded),
            torch.from_numpy(split.lengths[rows]),
            torch.from_numpy(split.labels[rows]),
        )


def pipeline_batches(split: EncodedSplit, config: TrainConfig, rng: np.random.Generator) -> Iterator[Step]:
    """The training CLI's batches: length-bucketed, padded in numpy, word dropout applied."""
    for rows in bucketed_batches(split, config.batch_size, rng):
        yield collate(split, rows, config.word_dropout, rng)


def training_speed(splits: Splits, config: TrainConfig, batches: int, rounds: int = 3) -> tuple[float, float]:
    """Tokens/s of our pipeline and of the plain reference loop, same model size, measured in
    alternating rounds of ``batches`` optimiser steps each, so machine noise hits both alike."""
    priors = load_priors(config)
    tokenizer = build_tokenizer(splits.train.texts, config, priors)
    split = encode_splits(tokenizer, splits)["train"]
    ways = {
        "pipeline": (pipeline_batches, lambda m, ids, lengths: m(ids, lengths)),
        "reference": (reference_batches, plain_forward),
    }
    totals = {name: [0, 0.0] for name in ways}
    for _ in range(rounds):
        for name, (make_batches, forward) in ways.items():
            model = build_model(config, tokenizer, len(splits.labels), priors).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            steps = itertools.islice(make_batches(split, config, np.random.default_rng(config.seed)), batches)
            start = time.perf_counter()
            for ids, lengths, labels in steps:
                loss = nn.functional.cross_entropy(forward(model, ids, lengths), labels)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
                optimizer.step()
                totals[name][0] += int(lengths.sum())
            totals[name][1] += time.perf_counter() - start
    return totals["pipeline"][0] / totals["pipeline"][1], totals["reference"][0] / totals["reference"][1]
