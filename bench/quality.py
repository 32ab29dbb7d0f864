"""Model quality and training speed, side by side in one run, on the default corpus's fixed split.

    python -m bench.quality --threads 1                       # everything (~15 min on 2 cores)
    python -m bench.quality --checkpoint checkpoints/default  # reuse the shipped model's training run
    python -m bench.quality --quick                           # 2 epochs on a sample: checks the script

Prints, for the default corpus, a table of the TF-IDF (word 1-2-grams + character 2-5-grams) +
logistic-regression baseline and our BiLSTM with the training CLI's defaults; then the training-speed
ratio of our pipeline to a plain reference loop (every batch padded to a fixed length by Python, no
bucketing, no packing), same model, side by side. Out of domain, the two tweet models score binary
movie-review sentences unchanged (nothing about movies was seen); then both are retrained on those
sentences (a user's data), on several seeded splits, with the mean difference.
Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench import movie_snippets
from model.checkpoint import load_checkpoint
from model.network import SentimentClassifier
from model.predictor import Predictor
from model.tokenizer import PAD_ID
from training.batches import EncodedSplit, bucketed_batches, collate, encode_split
from training.data import Dataset, load_dataset, load_default_corpus
from training.metrics import classification_report
from training.train import Splits, TrainConfig, build_model, build_tokenizer, make_splits, train

try:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
except ImportError as exc:  # pragma: no cover - a message, not a traceback
    raise SystemExit("bench.quality needs scikit-learn: pip install -e '.[bench]'") from exc


# Class probabilities of a trained model for some texts, columns in the order of its label names.
Scorer = Callable[[list[str]], tuple[np.ndarray, list[str]]]


def tfidf_baseline(splits: Splits) -> tuple[dict, Scorer]:
    """The linear baseline people try first; C=2 was the best of 1/2/4/8 on the validation split."""
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    )
    pipeline = make_pipeline(features, LogisticRegression(C=2.0, max_iter=2000))
    start = time.perf_counter()
    pipeline.fit(splits.train.texts, splits.train.labels)
    seconds = time.perf_counter() - start
    classes = [str(c) for c in pipeline.classes_]
    probs = pipeline.predict_proba(splits.test.texts)
    truth = np.array([classes.index(label) for label in splits.test.labels])
    report = {**classification_report(truth, probs, classes), "seconds": seconds, "tokens_per_second": None}
    return report, lambda texts: (pipeline.predict_proba(texts), classes)


def bilstm(data: Dataset, config: TrainConfig, checkpoint: Path | None = None) -> tuple[dict, Scorer]:
    """Train with ``config`` on ``data``, or take the test report of a checkpoint trained that way."""
    if checkpoint is not None:
        trained = load_checkpoint(checkpoint)
        print(f"  BiLSTM figures from {checkpoint} (trained by `python -m training` with these defaults)")
    else:
        trained = train(data, config, None, progress=False).checkpoint
    m = trained.metrics
    report = {
        **m["test"],
        "ece_uncalibrated": m["test_uncalibrated_ece"],
        "seconds": m["train_seconds"],
        "tokens_per_second": m["train_tokens_per_second"],
    }
    predictor = Predictor(trained, batch_size=256)
    return report, lambda texts: (predictor.predict_proba(texts)[0], predictor.labels)


def out_of_domain(scorers: dict[str, Scorer], data: Dataset) -> None:
    """Models trained on the tweets, scored unchanged on binary movie sentences: positive when
    P(positive) > P(negative). Nothing about movies was seen, so this rewards what generalises."""
    print(
        f"\nOut of domain: the default-corpus models above, not retrained, on {len(data):,} binary "
        "movie-review sentences (positive when P(positive) > P(negative))\n"
    )
    print("| model | accuracy |\n|---|---|")
    truth = np.array([label == "positive" for label in data.labels])
    for name, score in scorers.items():
        probs, labels = score(data.texts)
        positive = probs[:, labels.index("positive")] > probs[:, labels.index("negative")]
        print(f"| {name} | {(positive == truth).mean():.4f} |", flush=True)


def plain_forward(model: SentimentClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The same modules run the naive way: the LSTM steps through every padded position."""
    states, _ = model.lstm(model.embedding_dropout(model.embedding(ids)))  # (B, T, 2H)
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
    tokenizer, glove = build_tokenizer(splits.train.texts, config)
    index = {name: k for k, name in enumerate(splits.labels)}
    split = encode_split(tokenizer, splits.train.texts, np.array([index[x] for x in splits.train.labels]))
    ways = {
        "pipeline": (pipeline_batches, lambda m, ids, lengths: m(ids, lengths)),
        "reference": (reference_batches, plain_forward),
    }
    totals = {name: [0, 0.0] for name in ways}
    for _ in range(rounds):
        for name, (make_batches, forward) in ways.items():
            model = build_model(config, tokenizer, len(splits.labels), glove).train()
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


def compare(
    title: str, data: Dataset, config: TrainConfig, checkpoint: Path | None = None
) -> tuple[dict[str, dict], dict[str, Scorer]]:
    """Baseline and BiLSTM on the same seeded split of ``data``: test reports, and the models."""
    splits = make_splits(data, config)
    print(
        f"{title}: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test "
        f"(seed {config.seed})",
        flush=True,
    )
    runs = {"TF-IDF + LR": tfidf_baseline(splits), "BiLSTM (defaults)": bilstm(data, config, checkpoint)}
    rows = {name: report for name, (report, _) in runs.items()}
    print_table(title, rows)
    return rows, {name: scorer for name, (_, scorer) in runs.items()}


def compare_splits(title: str, data: Dataset, config: TrainConfig, count: int) -> None:
    """Baseline and BiLSTM on ``count`` seeded splits (seeds ``config.seed``, ``+1``, ...): on a
    small corpus one test split's sampling error (~1.3 points at 1,000 rows) hides the difference."""
    runs = [
        compare(f"{title}, split {k + 1} of {count}", data, replace(config, seed=config.seed + k))[0]
        for k in range(count)
    ]
    names = list(runs[0])
    print(f"\n{title}: mean (standard deviation) over {count} seeded splits\n")
    print("| model | test accuracy | test macro-F1 | ECE | training s |")
    print("|---|---|---|---|---|")
    for name in names:
        cells = [_spread([run[name][key] for run in runs]) for key in ("accuracy", "macro_f1", "ece")]
        seconds = np.mean([run[name]["seconds"] for run in runs])
        print(f"| {name} | {' | '.join(cells)} | {seconds:.1f} |")
    base, ours = names
    print()
    for key in ("accuracy", "macro_f1"):
        gaps = 100 * np.array([run[ours][key] - run[base][key] for run in runs])
        error = gaps.std(ddof=1) / np.sqrt(len(gaps)) if len(gaps) > 1 else float("nan")
        print(
            f"BiLSTM - baseline, {key}: mean {gaps.mean():+.2f} points (standard error {error:.2f}); "
            f"per split {', '.join(f'{g:+.2f}' for g in gaps)}",
            flush=True,
        )


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ({np.std(values, ddof=1) if len(values) > 1 else 0:.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 epochs on 5k examples: checks the script, not quality"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="take the default-corpus BiLSTM figures from this checkpoint, "
        "trained by `python -m training` with the defaults, instead of training again",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--speed-batches", type=int, default=60, help="optimiser steps per speed round")
    parser.add_argument(
        "--skip-binary", action="store_true", help="skip the binary movie-sentence retraining check"
    )
    parser.add_argument(
        "--binary-splits", type=int, default=5, help="seeded splits of the binary check (mean reported)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig()
    if args.quick:
        config = replace(config, epochs=2, max_examples=5_000)
    if args.checkpoint is not None:
        # Options added since the checkpoint was trained are missing from it; their defaults keep the
        # old behaviour, so only the values it does store must match.
        expected = asdict(config)
        if {**expected, **load_checkpoint(args.checkpoint).training} != expected:
            parser.error(f"{args.checkpoint} was not trained with the default training config")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    data = load_default_corpus()
    _, scorers = compare("Default corpus (CrowdFlower tweets, 3 classes)", data, config, args.checkpoint)
    movie = load_dataset(movie_snippets.fetch(), "text", "label")
    out_of_domain(scorers, movie)
    ours, reference = training_speed(make_splits(data, config), config, args.speed_batches)
    print(
        f"\ntraining speed, same model, alternating rounds: our pipeline {ours:,.0f} tokens/s, "
        f"plain reference loop (padded to {config.max_length}, no bucketing, no packing) "
        f"{reference:,.0f} tokens/s: {ours / reference:.2f}x",
        flush=True,
    )
    if not args.skip_binary:
        title = "Retraining on binary movie-review sentences (vaderSentiment snippets)"
        compare_splits(title, movie, config, 2 if args.quick else args.binary_splits)


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}\n")
    print("| model | test accuracy | test macro-F1 | ECE (uncalibrated) | training s | training tokens/s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        tps = f"{r['tokens_per_second']:,.0f}" if r["tokens_per_second"] else "n/a"
        ece = f"{r['ece']:.4f}" + (f" ({r['ece_uncalibrated']:.4f})" if "ece_uncalibrated" in r else "")
        print(f"| {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {ece} | {r['seconds']:.1f} | {tps} |")
    base, ours = rows["TF-IDF + LR"], rows["BiLSTM (defaults)"]
    print(
        f"\nBiLSTM - baseline: accuracy {100 * (ours['accuracy'] - base['accuracy']):+.2f} points, "
        f"macro-F1 {100 * (ours['macro_f1'] - base['macro_f1']):+.2f} points",
        flush=True,
    )


if __name__ == "__main__":
    main()
