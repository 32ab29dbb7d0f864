"""Labelled text from CSV, JSONL or Parquet, checked row by row, and its stratified splits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.corpus import CROWDFLOWER, fetch

SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class DataError(ValueError):
    """Bad training data; the message names the file, the row and the problem."""


@dataclass
class Dataset:
    texts: list[str]
    labels: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        return Dataset([self.texts[i] for i in rows], [self.labels[i] for i in rows], self.source)


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a whole file as a DataFrame, turning parse failures into a ``DataError``."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if kind == "csv":
        return _read_csv(path, encoding)
    if kind == "jsonl":
        return _read_jsonl(path, encoding)
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types on a bad file
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc


def _decode(path: Path, encoding: str) -> str:
    """The whole file as text; undecodable bytes stop with the line they are on."""
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}, line {line}: bytes not valid {encoding} ({exc.reason}); "
            "pass --encoding (for example latin-1) or re-save the file as UTF-8"
        ) from exc


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    _decode(path, encoding)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # Everything is read as text: a CSV cell has no type, and "007" must stay "007".
        return pd.read_csv(path, sep=sep, encoding=encoding, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line separators.
    for number, line in enumerate(_decode(path, encoding).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {record!r:.40}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def load_dataset(
    path: str | Path, text_column: str = "text", label_column: str = "label", encoding: str = "utf-8"
) -> Dataset:
    """Load and check a labelled file: every row needs a non-empty string text and a label."""
    frame = read_table(path, encoding)
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise DataError(f"{path}: no column {column!r}; columns are {', '.join(map(str, frame.columns))}")
    texts = [_check_text(path, row, v) for row, v in enumerate(frame[text_column], start=1)]
    labels = [_check_label(path, row, v) for row, v in enumerate(frame[label_column], start=1)]
    return Dataset(texts, labels, source=str(path))


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


def load_default_corpus() -> Dataset:
    """The CrowdFlower tweets (negative/neutral/positive), fetched on first use."""
    path = fetch(CROWDFLOWER).joinpath("tweets.csv")
    data = load_dataset(path, text_column="text", label_column="sentiment", encoding="latin-1")
    return deduplicate(data)


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


def stratified_split(labels: Sequence[str], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Row indices for each split; every class is divided in the same proportions."""
    rng = np.random.default_rng(seed)
    label_array = np.asarray(labels)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for name in sorted(set(labels)):
        rows = rng.permutation(np.flatnonzero(label_array == name))
        bounds = np.round(np.cumsum(fractions) * len(rows)).astype(int)
        for k, chunk in enumerate(np.split(rows, bounds[:-1])):
            parts[k].append(chunk)
    return [rng.permutation(np.concatenate(p)) for p in parts]
