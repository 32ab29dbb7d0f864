"""Model quality in one run, fixed seeds: our BiLSTM against TF-IDF + logistic regression and VADER.

    python -m bench.quality                                    # everything (~35 min on 2 cores)
    python -m bench.quality --checkpoint checkpoints/default   # table 1 from the shipped model
    python -m bench.quality --quick                            # 1 epoch on samples: checks the script

1. Each domain's held-out test split of the default corpus (split by document): 3-class accuracy and
   macro-F1, and binary accuracy on the sentences people rated clearly positive or negative (positive
   when P(positive) > P(negative); for VADER, when its compound score is above 0).
2. Leave one domain out: the default corpus without Amazon, NYT or movies in turn, scored on all of
   the left-out domain.
3. Retraining on a user's binary data: the movie-review sentences, several seeded splits.
4. Calibration: ECE on each domain's test split with and without the fitted temperature.
5. Training speed: tokens/s of our pipeline against a plain reference loop, same model.
6. Documents: the held-out Amazon reviews and NYT editorials rebuilt from their rated sentences,
   read whole (truncated at the model's length) against by sentences (``model.sentences``), with the
   accuracy of each rated sentence (``--documents-only --checkpoint ...``: this table alone, ~1 min).

Needs the bench extra: pip install -e '.[bench]' (scikit-learn and vaderSentiment).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench.speed import training_speed
from model.checkpoint import Checkpoint, load_checkpoint
from model.predictor import Predictor, aggregate
from model.sentences import sentences
from training.cli import default_threads
from training.corpus import HUTTO, fetch
from training.data import (
    DOMAINS,
    NEUTRAL_BAND,
    RATED,
    Dataset,
    load_default_corpus,
    load_movie_sentences,
    rating_label,
)
from training.metrics import expected_calibration_error
from training.train import TrainConfig, make_splits, train

try:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import Pipeline, make_pipeline, make_union
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
except ImportError as exc:  # pragma: no cover - a message, not a traceback
    raise SystemExit("bench.quality needs the bench extra: pip install -e '.[bench]'") from exc

LABELS = ["negative", "neutral", "positive"]
HELD_OUT = ("amazon", "nyt", "movies")  # the domains left out in turn (table 2)


@dataclass
class Answers:
    """A system's answers on some texts: 3-class label indices into LABELS, the binary call, and
    probabilities where the system has them (for ECE)."""

    label: np.ndarray  # (N,) int
    positive: np.ndarray  # (N,) bool
    probs: np.ndarray | None = None  # (N, 3)


System = Callable[[list[str]], Answers]


def from_probabilities(probs: np.ndarray, labels: Sequence[str]) -> Answers:
    """Answers from (N, L) probabilities; columns reordered to LABELS (a binary model has no neutral)."""
    full = np.zeros((len(probs), len(LABELS)))
    for k, name in enumerate(labels):
        full[:, LABELS.index(name)] = probs[:, k]
    positive = full[:, LABELS.index("positive")] > full[:, LABELS.index("negative")]
    return Answers(full.argmax(1), positive, full)


def bilstm_system(checkpoint: Checkpoint) -> System:
    predictor = Predictor(checkpoint, device="cpu", batch_size=256)
    return lambda texts: from_probabilities(predictor.predict_proba(texts)[0], predictor.labels)


def tfidf_pipeline() -> Pipeline:
    """The linear baseline people try first: word 1-2-grams and character 2-5-grams, C=2 (the best of
    1/2/4/8 on the tweets' validation split)."""
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    )
    return make_pipeline(features, LogisticRegression(C=2.0, max_iter=2000))


def tfidf_system(train_split: Dataset) -> tuple[System, float]:
    pipeline = tfidf_pipeline()
    start = time.perf_counter()
    pipeline.fit(train_split.texts, train_split.labels)
    seconds = time.perf_counter() - start
    classes = [str(c) for c in pipeline.classes_]
    return lambda texts: from_probabilities(pipeline.predict_proba(texts), classes), seconds


def vader_system() -> System:
    """VADER's documented rule: compound >= 0.05 positive, <= -0.05 negative, neutral between."""
    analyzer = SentimentIntensityAnalyzer()

    def answer(texts: list[str]) -> Answers:
        compound = np.array([analyzer.polarity_scores(t)["compound"] for t in texts])
        label = np.where(compound >= 0.05, 2, np.where(compound <= -0.05, 0, 1))
        return Answers(label, compound > 0)

    return answer


def score(answers: Answers, data: Dataset) -> dict[str, float]:
    truth = np.array([LABELS.index(label) for label in data.labels])
    clear = truth != LABELS.index("neutral")
    present = sorted(set(truth.tolist()))
    report = {
        "accuracy": float((answers.label == truth).mean()),
        "macro_f1": float(f1_score(truth, answers.label, labels=present, average="macro")),
        "binary": float((answers.positive[clear] == (truth[clear] == LABELS.index("positive"))).mean()),
    }
    if answers.probs is not None:
        report["ece"] = expected_calibration_error(answers.probs, truth)
    return report


def domains_of(data: Dataset) -> list[str]:
    present = set(data.domains or ())
    return [d for d in DOMAINS if d in present]


def print_domain_table(title: str, results: dict[str, dict[str, dict[str, float]]], sizes: dict) -> None:
    """``results[domain][system]`` as one markdown table, then each domain's BiLSTM margins."""
    print(f"\n{title}\n")
    print("| domain | sentences | system | 3-class accuracy | 3-class macro-F1 | binary accuracy |")
    print("|---|---:|---|---:|---:|---:|")
    for domain, rows in results.items():
        for system, r in rows.items():
            cells = f"{100 * r['accuracy']:.1f} % | {100 * r['macro_f1']:.1f} | {100 * r['binary']:.1f} %"
            print(f"| {domain} | {sizes[domain]:,} | {system} | {cells} |")
    print()
    for domain, rows in results.items():
        ours = rows["BiLSTM"]["binary"]
        margins = ", ".join(
            f"{100 * (ours - r['binary']):+.1f} against {name}"
            for name, r in rows.items()
            if name != "BiLSTM"
        )
        print(f"{domain}: BiLSTM binary accuracy {margins} (points)")


def held_out_domains(data: Dataset, config: TrainConfig, checkpoint: Path | None) -> Checkpoint:
    """Table 1 (and 4): every system on each domain's test split of the default corpus."""
    splits = make_splits(data, config)
    if checkpoint is not None:
        trained = load_checkpoint(checkpoint)
        print(f"BiLSTM from {checkpoint} (trained by `python -m training` with these defaults)", flush=True)
    else:
        trained = train(data, config, None, progress=False).checkpoint
    tfidf, tfidf_seconds = tfidf_system(splits.train)
    systems = {"BiLSTM": bilstm_system(trained), "TF-IDF + LR": tfidf, "VADER": vader_system()}
    results, sizes = {}, {}
    for domain in domains_of(splits.test):
        test = splits.test.domain(domain)
        sizes[domain] = len(test)
        results[domain] = {name: score(system(test.texts), test) for name, system in systems.items()}
    print_domain_table(
        f"1. Held-out test split of each domain ({len(splits.train):,} training sentences, seed "
        f"{config.seed}; BiLSTM trained in {trained.metrics['train_seconds']:.0f} s, "
        f"TF-IDF + LR in {tfidf_seconds:.0f} s)",
        results,
        sizes,
    )
    calibration(trained, splits.test)
    return trained


def calibration(trained: Checkpoint, test: Dataset) -> None:
    """Table 4: ECE per domain with the checkpoint's temperature and with none, and the ECE that a
    perfectly calibrated model with the same confidences would show on that many sentences."""
    raw = bilstm_system(replace(trained, temperature=1.0))
    calibrated = bilstm_system(trained)
    print(f"\n4. Calibration: ECE on each test split (temperature {trained.temperature:.3f} and 1)\n")
    print(
        "| domain | sentences | ECE calibrated | ECE uncalibrated | ECE if perfectly calibrated (90th pct.) |"
    )
    print("|---|---:|---:|---:|---:|")
    for domain in domains_of(test):
        part = test.domain(domain)
        answers = calibrated(part.texts)
        cells = [score(answers, part)["ece"], score(raw(part.texts), part)["ece"]]
        floor = ece_floor(answers.probs)  # type: ignore[arg-type]
        print(
            f"| {domain} | {len(part):,} | {cells[0]:.4f} | {cells[1]:.4f} | "
            f"{floor.mean():.4f} ({np.percentile(floor, 90):.4f}) |",
            flush=True,
        )


def ece_floor(probs: np.ndarray, draws: int = 300, seed: int = 0) -> np.ndarray:
    """ECE of ``draws`` label sets drawn from ``probs`` themselves: what a perfectly calibrated model
    with these confidences scores on this many texts, from sampling alone (15 bins)."""
    rng = np.random.default_rng(seed)
    cumulative = probs.cumsum(axis=1)
    floors = []
    for _ in range(draws):
        drawn = (rng.random((len(probs), 1)) > cumulative).sum(axis=1).clip(max=probs.shape[1] - 1)
        floors.append(expected_calibration_error(probs, drawn))
    return np.array(floors)


def leave_one_domain_out(data: Dataset, config: TrainConfig, domains: Sequence[str]) -> None:
    """Table 2: trained without one domain, scored on all of it (nothing of it was seen)."""
    results, sizes = {}, {}
    for left_out in domains:
        rest = data.subset([i for i, d in enumerate(data.domains or []) if d != left_out])
        unseen = data.domain(left_out)
        trained = train(rest, config, None, progress=False).checkpoint
        tfidf, _ = tfidf_system(make_splits(rest, config).train)
        systems = {"BiLSTM": bilstm_system(trained), "TF-IDF + LR": tfidf, "VADER": vader_system()}
        sizes[left_out] = len(unseen)
        results[left_out] = {name: score(system(unseen.texts), unseen) for name, system in systems.items()}
        print(f"  trained without {left_out} in {trained.metrics['train_seconds']:.0f} s", flush=True)
    print_domain_table("2. Leave one domain out: trained without it, scored on all of it", results, sizes)


def binary_retraining(data: Dataset, config: TrainConfig, count: int) -> None:
    """Table 3: a user's binary sentences, retrained with the defaults on ``count`` seeded splits."""
    runs: dict[str, list[tuple[float, float, float]]] = {"BiLSTM (defaults)": [], "TF-IDF + LR": []}
    for k in range(count):
        seeded = replace(config, seed=config.seed + k)
        splits = make_splits(data, seeded)
        start = time.perf_counter()
        trained = train(data, seeded, None, progress=False).checkpoint
        r = score(bilstm_system(trained)(splits.test.texts), splits.test)
        runs["BiLSTM (defaults)"].append((r["accuracy"], r["macro_f1"], time.perf_counter() - start))
        tfidf, seconds = tfidf_system(splits.train)
        r = score(tfidf(splits.test.texts), splits.test)
        runs["TF-IDF + LR"].append((r["accuracy"], r["macro_f1"], seconds))
        print(f"  split {k + 1}: " + ", ".join(f"{n} {v[-1][0]:.4f}" for n, v in runs.items()), flush=True)
    print(
        f"\n3. Retraining on {len(data):,} binary movie-review sentences: mean (standard deviation) over "
        f"{count} seeded 80/10/10 splits; BiLSTM seconds are the whole run (vocabulary, GloVe, training, "
        "calibration)\n"
    )
    print("| model | test accuracy | test macro-F1 | training s |\n|---|---:|---:|---:|")
    for name, values in runs.items():
        table = np.array(values)
        cells = [f"{100 * table[:, j].mean():.2f} ({100 * _std(table[:, j]):.2f})" for j in (0, 1)]
        print(f"| {name} | {cells[0]} | {cells[1]} | {table[:, 2].mean():.1f} |")
    gaps = 100 * (np.array(runs["BiLSTM (defaults)"])[:, 0] - np.array(runs["TF-IDF + LR"])[:, 0])
    print(
        f"\nBiLSTM - TF-IDF + LR, accuracy: mean {gaps.mean():+.2f} points (standard error "
        f"{_std(gaps) / np.sqrt(len(gaps)):.2f}); per split {', '.join(f'{g:+.2f}' for g in gaps)}",
        flush=True,
    )


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# --- 6. Documents: whole text against sentence aggregation ----------------------------------------

DOCUMENT_DOMAINS = ("amazon", "nyt")
# A document's label is the mean of its sentences' mean ratings, with this band for neutral: the same
# rule as a sentence's (training.data.NEUTRAL_BAND); averaging pulls documents towards 0, so about
# 30-40 % of them are neutral.
DOCUMENT_NEUTRAL_BAND = NEUTRAL_BAND


@dataclass
class Document:
    text: str
    label: str  # by the mean rating of its sentences
    sentences: list[tuple[int, int]]  # the rated sentences' spans in ``text``
    sentence_labels: list[str]


def held_out_documents(data: Dataset, config: TrainConfig, domain: str, split: str) -> list[Document]:
    """The documents of ``domain`` in the ``split`` ("test" or "val", split by document as in training),
    rebuilt from the rated file in sentence order, joined by spaces."""
    part = getattr(make_splits(data, config), split).domain(domain)
    wanted = set(part.groups or [])
    rows: dict[str, list[tuple[int, float, str]]] = {}
    path = fetch(HUTTO).joinpath(RATED[domain])
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            identifier, rating, text = line.split("\t", 2)
            document, _, number = identifier.partition("_")
            if document in wanted:
                rows.setdefault(document, []).append((int(number), float(rating), text.strip()))
    documents = []
    for parts in rows.values():
        parts.sort()
        text, spans = "", []
        for _, _, sentence in parts:
            text += " " if text else ""
            spans.append((len(text), len(text) + len(sentence)))
            text += sentence
        mean = float(np.mean([r for _, r, _ in parts]))
        label = "neutral" if abs(mean) <= DOCUMENT_NEUTRAL_BAND else ("positive" if mean > 0 else "negative")
        documents.append(Document(text, label, spans, [rating_label(r) for _, r, _ in parts]))
    return documents


def document_strategies(
    predictor: Predictor, documents: list[Document]
) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray]:
    """Each way of reading a document -> its (D, L) probabilities; what the splitter did; and the
    probabilities (S, L) of each rated sentence read alone."""
    texts = [d.text for d in documents]
    whole, truncated = predictor.predict_proba(texts)
    split = [sentences(t) for t in texts]
    flat = [t[a:b] for t, spans in zip(texts, split, strict=True) for a, b in spans]
    probs, _ = predictor.predict_proba(flat)
    gold_flat = [d.text[a:b] for d in documents for a, b in d.sentences]
    gold, _ = predictor.predict_proba(gold_flat)

    def per_document(p: np.ndarray, spans_of: list[list[tuple[int, int]]], weighted: bool) -> np.ndarray:
        out, k = [], 0
        for spans in spans_of:
            part = p[k : k + len(spans)]
            k += len(spans)
            out.append(aggregate(part, [b - a if weighted else 1 for a, b in spans]))
        return np.array(out)

    ours = per_document(probs, split, False)
    fits = np.array([not t for t in truncated])
    strategies = {
        "whole text (truncated at the model's length, as before)": whole,
        "sentences, length-weighted mean": per_document(probs, split, True),
        "sentences, mean (served)": ours,
        "whole text when it fits, else sentences": np.where(fits[:, None], whole, ours),
        "the rated sentences, mean": per_document(gold, [d.sentences for d in documents], False),
    }
    exact = sum(len(set(s) & set(d.sentences)) for s, d in zip(split, documents, strict=True))
    facts = {
        "truncated": float(np.mean(truncated)),
        "splitter_exact": exact / len(gold_flat),
        "sentences_found": len(flat) / len(gold_flat),
    }
    return strategies, facts, gold


def documents_table(checkpoint: Checkpoint, data: Dataset, config: TrainConfig) -> None:
    """Table 6: document accuracy of each way of reading, per-sentence accuracy, the splitter."""
    predictor = Predictor(checkpoint, device="cpu", batch_size=256)
    print(
        "\n6. Held-out documents (test and validation splits, by document): document label by the "
        f"mean of its sentences' "
        f"ratings, neutral within ±{DOCUMENT_NEUTRAL_BAND}\n"
    )
    print("| split | domain | documents | reading | 3-class accuracy | 3-class macro-F1 | binary accuracy |")
    print("|---|---|---:|---|---:|---:|---:|")
    notes = []
    totals: dict[str, list[float]] = {}
    for split, domain in itertools.product(("test", "val"), DOCUMENT_DOMAINS):
        documents = held_out_documents(data, config, domain, split)
        truth = Dataset([d.text for d in documents], [d.label for d in documents])
        strategies, facts, gold = document_strategies(predictor, documents)
        for name, probs in strategies.items():
            r = score(from_probabilities(probs, predictor.labels), truth)
            cells = f"{100 * r['accuracy']:.1f} % | {100 * r['macro_f1']:.1f} | {100 * r['binary']:.1f} %"
            print(f"| {split} | {domain} | {len(documents)} | {name} | {cells} |")
            totals.setdefault(name, []).extend([r["accuracy"] * len(documents), len(documents)])
        rated = Dataset([""] * len(gold), [s for d in documents for s in d.sentence_labels])
        per_sentence = score(from_probabilities(gold, predictor.labels), rated)
        counts = {k: sum(d.label == k for d in documents) for k in LABELS}
        notes.append(
            f"{split} {domain}: {len(rated)} rated sentences, per-sentence 3-class accuracy "
            f"{100 * per_sentence['accuracy']:.1f} %, binary {100 * per_sentence['binary']:.1f} %; "
            f"documents {counts}; {100 * facts['truncated']:.0f} % of documents longer than the model's "
            f"length; the splitter found {facts['sentences_found']:.2f} sentences per rated sentence, "
            f"{100 * facts['splitter_exact']:.0f} % of the rated sentences exactly"
        )
    print()
    for note in notes:
        print(note, flush=True)
    print(
        "\nall four: " + "; ".join(f"{n} {100 * sum(v[::2]) / sum(v[1::2]):.1f} %" for n, v in totals.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on samples: checks the script, not quality"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="take table 1's BiLSTM from this checkpoint, trained by `python -m training` with the "
        "defaults, instead of training it again",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the cores free now)")
    parser.add_argument("--binary-splits", type=int, default=5, help="seeded splits of table 3")
    parser.add_argument("--speed-batches", type=int, default=60, help="optimiser steps per speed round")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["lodo", "binary", "speed", "documents"],
        help="tables to skip",
    )
    parser.add_argument(
        "--documents-only",
        action="store_true",
        help="table 6 alone (held-out Amazon and NYT documents: whole text against sentences); "
        "needs --checkpoint",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads or default_threads())
    config = TrainConfig()
    if args.quick:
        config = replace(config, epochs=1, max_examples=3_000)
    if args.checkpoint is not None:
        expected = asdict(config)
        if {**expected, **load_checkpoint(args.checkpoint).training} != expected:
            parser.error(f"{args.checkpoint} was not trained with the default training config")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    data = load_default_corpus()
    if args.documents_only:
        if args.checkpoint is None:
            parser.error("--documents-only needs --checkpoint")
        documents_table(load_checkpoint(args.checkpoint), data, config)
        return
    trained = held_out_domains(data, config, args.checkpoint)
    if "lodo" not in args.skip:
        leave_one_domain_out(data, config, HELD_OUT[:1] if args.quick else HELD_OUT)
    if "binary" not in args.skip:
        binary_retraining(load_movie_sentences(), config, 2 if args.quick else args.binary_splits)
    speed = trained.metrics["train_tokens_per_second"]
    print(f"\n5. Training speed: the default model trained at {speed:,.0f} tokens/s", flush=True)
    if "speed" not in args.skip:
        ours, reference = training_speed(make_splits(data, config), config, args.speed_batches)
        print(
            f"same model, alternating rounds: our pipeline {ours:,.0f} tokens/s, plain reference loop "
            f"(padded to {config.max_length}, no bucketing, no packing) {reference:,.0f} tokens/s: "
            f"{ours / reference:.2f}x",
            flush=True,
        )
    if "documents" not in args.skip:
        documents_table(trained, data, config)


if __name__ == "__main__":
    main()
