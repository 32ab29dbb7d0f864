"""CSV, TSV, JSONL and Parquet files as pandas DataFrames, whole or in chunks of rows, with errors that
name the file and the line. Shared by training, evaluation and batch scoring; serving never imports it.

Needs the ``score`` or ``train`` extra (pandas, pyarrow).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import pandas as pd
except ImportError as exc:  # a serving-only install has no pandas
    raise ImportError(
        "reading CSV/JSONL/Parquet files needs pandas and pyarrow: pip install 'lstm-sentiment[score]'"
    ) from exc

SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class DataError(ValueError):
    """A file that cannot be used as given; the message names the file, the row and the problem."""


def table_kind(path: Path) -> str:
    """ "csv", "jsonl" or "parquet", from the suffix."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet")
    return kind


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """The whole file as one DataFrame (CSV cells as strings)."""
    frames = list(iter_table(path, encoding, chunk_rows=None))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def iter_table(
    path: str | Path, encoding: str = "utf-8", chunk_rows: int | None = 10_000
) -> Iterator[pd.DataFrame]:
    """The file's rows in DataFrames of ``chunk_rows`` rows (the last may be shorter; None: one frame),
    so that memory stays flat whatever the file's size. Every chunk has the same columns."""
    path = Path(path)
    kind = table_kind(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if kind == "csv":
        return _csv_chunks(path, encoding, chunk_rows)
    if kind == "jsonl":
        return _jsonl_chunks(path, encoding, chunk_rows)
    return _parquet_chunks(path, chunk_rows)


def parquet_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (None for other formats: counting them means reading)."""
    if table_kind(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # unreadable: iter_table says why
        return None


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line; undecodable bytes stop with the line they are on."""
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 0
    with path.open("rb") as f:
        try:
            for number, raw in enumerate(f, start=1):
                yield number, decoder.decode(raw)
            decoder.decode(b"", final=True)  # a character cut off at the end of the file
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: bytes not valid {encoding} ({exc.reason}); "
                "pass --encoding (for example latin-1) or re-save the file as UTF-8"
            ) from exc


def _csv_chunks(path: Path, encoding: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    for _ in _lines(path, encoding):  # a streaming pass: pandas' decode errors do not name the line
        pass
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # Everything is read as text: a CSV cell has no type, and "007" must stay "007".
        options: dict[str, Any] = {"sep": sep, "encoding": encoding, "dtype": str, "keep_default_na": False}
        if chunk_rows is None:
            yield pd.read_csv(path, **options)
            return
        with pd.read_csv(path, chunksize=chunk_rows, **options) as reader:
            yield from reader
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc


def _records(path: Path, encoding: str) -> Iterator[dict[str, Any]]:
    # Lines end at b"\n" only: JSON strings may hold U+2028 and other line separators.
    for number, line in _lines(path, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {record!r:.40}")
        yield record


def _jsonl_chunks(path: Path, encoding: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    # A first pass collects every key (records need not share them) so that all chunks agree on columns.
    columns = list(dict.fromkeys(key for record in _records(path, encoding) for key in record))
    chunk: list[dict[str, Any]] = []
    for record in _records(path, encoding):
        chunk.append(record)
        if chunk_rows is not None and len(chunk) == chunk_rows:
            yield pd.DataFrame.from_records(chunk, columns=columns)
            chunk = []
    if chunk or chunk_rows is None:
        yield pd.DataFrame.from_records(chunk, columns=columns)


def _parquet_chunks(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    try:
        if chunk_rows is None:
            yield pd.read_parquet(path)
            return
        pending: list[pd.DataFrame] = []
        held = 0
        # Batches may stop at row-group boundaries: regroup them into chunks of exactly chunk_rows.
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            pending.append(batch.to_pandas())
            held += batch.num_rows
            while held >= chunk_rows:
                merged = pd.concat(pending, ignore_index=True)
                yield merged.iloc[:chunk_rows].reset_index(drop=True)
                pending, held = [merged.iloc[chunk_rows:]], held - chunk_rows
        if held:
            yield pd.concat(pending, ignore_index=True)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types on a bad file
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc


class TableWriter:
    """Appends DataFrames with the same columns to one file, in the format of ``suffix`` (that of the
    final name, when ``path`` is a temporary one)."""

    def __init__(self, path: Path, suffix: str) -> None:
        self.path, self.kind = path, table_kind(Path("x" + suffix))
        self.sep = "\t" if suffix.lower() == ".tsv" else ","
        self.rows = 0
        self._parquet: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "csv":
            frame.to_csv(
                self.path, mode="a" if self.rows else "w", header=not self.rows, index=False, sep=self.sep
            )
        elif self.kind == "jsonl":
            with self.path.open("a" if self.rows else "w", encoding="utf-8") as f:
                text = frame.to_json(orient="records", lines=True, force_ascii=False) if len(frame) else ""
                f.write(text if not text or text.endswith("\n") else text + "\n")
        else:
            self._write_parquet(frame)
        self.rows += len(frame)

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self._parquet.schema:
            try:
                table = table.cast(self._parquet.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise DataError(
                    f"{self.path}: a column changes type after row {self.rows} ({exc}); "
                    "write CSV or JSONL instead"
                ) from exc
        self._parquet.write_table(table)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_table(frame: pd.DataFrame, path: Path, suffix: str) -> None:
    """Write ``frame`` in the format of ``suffix``."""
    with TableWriter(path, suffix) as writer:
        writer.write(frame)
