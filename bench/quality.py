"""Model quality and training speed, side by side in one run, on the default corpus's fixed split.

    python -m bench.quality            # full run (about 10 minutes on 2 CPU cores)
    python -m bench.quality --quick    # fewer epochs and a sample, to check the script works

Prints one table: the TF-IDF (word 1-2-grams + character 2-5-grams) + logistic-regression baseline,
our BiLSTM with the training CLI's defaults, and the same BiLSTM trained by a plain reference loop
(every batch padded to a fixed length, no bucketing, no packing) for the training-speed ratio.
Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from bench import movie_snippets
from model.tokenizer import PAD_ID
from training.batches import EncodedSplit, encode_split
from training.data import Dataset, load_dataset, load_default_corpus
from training.metrics import classification_report
from training.train import Splits, TrainConfig, build_model, build_tokenizer, make_splits, train

try:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
except ImportError as exc:  # pragma: no cover - a message, not a traceback
    raise SystemExit("bench.quality needs scikit-learn: pip install -e '.[bench]'") from exc


def tfidf_baseline(splits: Splits) -> dict:
    """The linear baseline people try first; C=2 was the best of 1/2/4/8 on the validation split."""
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    )
    pipeline = make_pipeline(features, LogisticRegression(C=2.0, max_iter=2000))
    start = time.perf_counter()
    pipeline.fit(splits.train.texts, splits.train.labels)
    seconds = time.perf_counter() - start
    probs = pipeline.predict_proba(splits.test.texts)
    classes = list(pipeline.classes_)
    truth = np.array([classes.index(label) for label in splits.test.labels])
    return {**classification_report(truth, probs, classes), "seconds": seconds, "tokens_per_second": None}


def bilstm(data: Dataset, config: TrainConfig) -> dict:
    result = train(data, config, None, progress=False)
    m = result.checkpoint.metrics
    return {
        **m["test"],
        "ece_uncalibrated": m["test_uncalibrated_ece"],
        "seconds": m["train_seconds"],
        "tokens_per_second": m["train_tokens_per_second"],
    }


def plain_forward(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The same modules run the naive way: the LSTM steps through every padded position."""
    states, _ = model.lstm(model.embedding_dropout(model.embedding(ids)))  # (B, T, 2H)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
    mean = states.masked_fill(~mask, 0.0).sum(1) / lengths[:, None]
    maximum = states.masked_fill(~mask, float("-inf")).amax(1)
    return model.head(model.head_dropout(torch.cat([maximum, mean], dim=-1)))


def reference_speed(splits: Splits, config: TrainConfig, batches: int) -> float:
    """Tokens/s of a plain loop: Python padding of each batch to max_length, shuffled order."""
    tokenizer, glove = build_tokenizer(splits.train.texts, config)
    index = {name: k for k, name in enumerate(splits.labels)}
    split: EncodedSplit = encode_split(
        tokenizer, splits.train.texts, np.array([index[x] for x in splits.train.labels])
    )
    model = build_model(config, tokenizer, len(splits.labels), glove).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(split))
    tokens, start = 0, time.perf_counter()
    for b in range(batches):
        rows = order[b * config.batch_size : (b + 1) * config.batch_size]
        padded = []
        for r in rows:  # the per-batch Python padding loop our pipeline avoids
            seq = split.flat[split.offsets[r] : split.offsets[r] + split.lengths[r]].tolist()
            padded.append(seq + [PAD_ID] * (config.max_length - len(seq)))
        ids, lengths = torch.tensor(padded), torch.from_numpy(split.lengths[rows])
        loss = nn.functional.cross_entropy(
            plain_forward(model, ids, lengths), torch.from_numpy(split.labels[rows])
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        tokens += int(lengths.sum())
    return tokens / (time.perf_counter() - start)


def compare(title: str, data: Dataset, config: TrainConfig) -> dict[str, dict]:
    """Baseline and BiLSTM on the same seeded split of ``data``."""
    splits = make_splits(data, config)
    print(
        f"{title}: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test "
        f"(seed {config.seed})",
        flush=True,
    )
    rows = {"TF-IDF + LR": tfidf_baseline(splits), "BiLSTM (defaults)": bilstm(data, config)}
    print_table(title, rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 epochs on 5k examples: checks the script, not quality"
    )
    parser.add_argument("--reference-batches", type=int, default=150, help="batches timed for the plain loop")
    parser.add_argument(
        "--skip-binary", action="store_true", help="skip the binary movie-sentence retraining check"
    )
    args = parser.parse_args()
    config = TrainConfig()
    if args.quick:
        config = replace(config, epochs=2, max_examples=5_000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    data = load_default_corpus()
    rows = compare("Default corpus (CrowdFlower tweets, 3 classes)", data, config)
    reference = reference_speed(make_splits(data, config), config, args.reference_batches)
    ours = rows["BiLSTM (defaults)"]["tokens_per_second"]
    print(
        f"\ntraining speed: BiLSTM pipeline {ours:,.0f} tokens/s, plain reference loop (fixed padding to "
        f"{config.max_length}, no bucketing, no packing) {reference:,.0f} tokens/s: {ours / reference:.2f}x"
    )
    if not args.skip_binary:
        movie = load_dataset(movie_snippets.fetch(), "text", "label")
        compare("Retraining on binary movie-review sentences (vaderSentiment snippets)", movie, config)


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
