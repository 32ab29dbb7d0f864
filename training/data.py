"""Labelled text from CSV, JSONL or Parquet, checked row by row; the default corpus; stratified splits
that keep each document (or other group of rows) on one side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Reading files lives in model/tabular.py (scoring shares it); these names stay importable from here.
from model.tabular import SUFFIXES as SUFFIXES
from model.tabular import DataError, read_table
from training.corpus import CROWDFLOWER, HUTTO, fetch


@dataclass
class Dataset:
    """Texts and their labels; optionally the group of each row (rows of one document share it, and
    splits keep a group together) and its domain (validation weighs domains equally)."""

    texts: list[str]
    labels: list[str]
    source: str = ""
    groups: list[str] | None = None
    domains: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        def pick(values: list[str]) -> list[str]:
            return [values[i] for i in rows]

        groups = None if self.groups is None else pick(self.groups)
        domains = None if self.domains is None else pick(self.domains)
        return Dataset(pick(self.texts), pick(self.labels), self.source, groups, domains)

    def domain(self, name: str) -> Dataset:
        """The rows of one domain."""
        return self.subset([i for i, d in enumerate(self.domains or []) if d == name])

    @staticmethod
    def concat(parts: Sequence[Dataset], source: str) -> Dataset:
        """Rows of ``parts`` end to end; groups are prefixed by domain so they stay distinct."""

        def column(name: str) -> list[str] | None:
            if all(getattr(p, name) is None for p in parts):
                return None
            return [v for p in parts for v in (getattr(p, name) or [""] * len(p))]

        return Dataset(
            [t for p in parts for t in p.texts],
            [label for p in parts for label in p.labels],
            source,
            column("groups"),
            column("domains"),
        )


def load_dataset(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8",
    group_column: str | None = None,
) -> Dataset:
    """Load and check a labelled file: every row needs a non-empty string text and a label. Rows that
    share a value of ``group_column`` (a document id, say) are kept on one side of every split."""
    frame = read_table(path, encoding)
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    for column in (text_column, label_column, group_column):
        if column is not None and column not in frame.columns:
            raise DataError(f"{path}: no column {column!r}; columns are {', '.join(map(str, frame.columns))}")
    texts = [_check_text(path, row, v) for row, v in enumerate(frame[text_column], start=1)]
    labels = [_check_label(path, row, v) for row, v in enumerate(frame[label_column], start=1)]
    groups = None if group_column is None else [str(v) for v in frame[group_column]]
    return Dataset(texts, labels, str(path), groups)


def _check_text(path: str | Path, row: int, value: Any) -> str:
    if not isinstance(value, str):
        raise DataError(f"{path}, row {row}: text must be a string, got {type(value).__name__} {value!r:.40}")
    if not value.strip():
        raise DataError(f"{path}, row {row}: text is empty")
    return value


def _check_label(path: str | Path, row: int, value: Any) -> str:
    # Integer labels (1, 1.0 from a float column, "1") all become the name "1".
    if isinstance(value, bool) or value is None or (isinstance(value, float) and np.isnan(value)):
        raise DataError(f"{path}, row {row}: label is missing or not a string/integer: {value!r}")
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DataError(f"{path}, row {row}: label must be a string or an integer, got {value!r:.40}")


def label_names(labels: Sequence[str], source: str = "data") -> list[str]:
    """Sorted label names (numerically when all are integers); at least two are needed."""
    names = sorted(set(labels), key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))
    if len(names) < 2:
        raise DataError(f"{source}: only one class ({names[0]!r}); a classifier needs at least two")
    return names


# A mean human rating within this distance of 0 (on -4..4) is neutral; beyond it, its sign decides.
NEUTRAL_BAND = 0.5
# The human-rated sets of Hutto & Gilbert (2014) in the default corpus, by file under data/hutto-2014.
RATED = {"tweets": "tweets.tsv", "amazon": "amazon.tsv", "nyt": "nyt.tsv", "movies": "movies.tsv"}
DOMAINS = ("crowdflower", *RATED)


def rating_label(rating: float) -> str:
    if rating > NEUTRAL_BAND:
        return "positive"
    if rating < -NEUTRAL_BAND:
        return "negative"
    return "neutral"


def load_crowdflower() -> Dataset:
    """The CrowdFlower tweets (negative/neutral/positive), retweets dropped, each its own group."""
    path = fetch(CROWDFLOWER).joinpath("tweets.csv")
    data = deduplicate(load_dataset(path, text_column="text", label_column="sentiment", encoding="latin-1"))
    data.groups = [str(i) for i in range(len(data))]
    data.domains = ["crowdflower"] * len(data)
    return data


def load_rated(domain: str) -> Dataset:
    """One of the human-rated sets, fetched on first use."""
    return read_rated(fetch(HUTTO).joinpath(RATED[domain]), domain)


def read_rated(path: Path, domain: str) -> Dataset:
    """``id<TAB>mean rating<TAB>sentence`` per line; the id ``12_3`` is sentence 3 of document 12, so
    the document is the group."""
    texts, labels, groups = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            identifier, rating, text = line.split("\t", 2)
            label = rating_label(float(rating))
        except ValueError as exc:
            raise DataError(f"{path}, line {number}: expected id, rating and text: {exc}") from exc
        texts.append(text.strip())
        labels.append(label)
        groups.append(identifier.split("_")[0])
    return Dataset(texts, labels, str(path), groups, [domain] * len(texts))


def load_default_corpus(domains: Sequence[str] = DOMAINS) -> Dataset:
    """The default training corpus: the CrowdFlower tweets and the four human-rated sets, fetched on
    first use, each row tagged with its domain and document."""
    unknown = set(domains) - set(DOMAINS)
    if unknown:
        raise DataError(f"unknown domain(s) {sorted(unknown)}; choose from {', '.join(DOMAINS)}")
    parts = [load_crowdflower() if d == "crowdflower" else load_rated(d) for d in domains]
    return Dataset.concat(parts, "default corpus (" + ", ".join(domains) + ")")


def load_movie_sentences() -> Dataset:
    """Binary movie-review sentences (the retraining check): the sign of the mean rating, ties at 0
    dropped: 10,568 sentences."""
    path = fetch(HUTTO).joinpath(RATED["movies"])
    rows = [line.split("\t", 2) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [(text.strip(), float(r)) for _, r, text in rows if float(r) != 0]
    return Dataset([t for t, _ in kept], ["positive" if r > 0 else "negative" for _, r in kept], str(path))


def deduplicate(data: Dataset) -> Dataset:
    """Drop exact repeats of a text (retweets), keeping the first, so no test text is seen in training."""
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(data.texts):
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return data.subset(keep)


def stratified_split(
    labels: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    groups: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Row indices for each split. Every stratum (a class, within a domain) is divided in the same
    proportions; with ``groups``, whole groups are divided, so no document is on two sides, and a
    group of several rows is its domain's own stratum."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    group_of = list(groups) if groups is not None else [str(i) for i in range(n)]
    domain_of = list(domains) if domains is not None else [""] * n
    members: dict[tuple[str, str], list[int]] = {}
    for row, key in enumerate(zip(domain_of, group_of, strict=True)):
        members.setdefault(key, []).append(row)
    strata: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, rows in members.items():
        stratum = (key[0], labels[rows[0]] if len(rows) == 1 else "\0document")
        strata.setdefault(stratum, []).append(key)
    parts: list[list[int]] = [[] for _ in fractions]
    for stratum in sorted(strata):
        keys = strata[stratum]
        order = rng.permutation(len(keys))
        bounds = np.round(np.cumsum(fractions) * len(keys)).astype(int)
        for k, chunk in enumerate(np.split(order, bounds[:-1])):
            parts[k].extend(row for i in chunk for row in members[keys[i]])
    return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]
