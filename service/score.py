"""``python -m service.score INPUT OUTPUT``: score a whole file offline, no server needed.

Reads CSV, TSV, JSONL or Parquet; writes the same format (from OUTPUT's suffix) with every input column
followed by ``pred_label``, ``pred_score``, one ``pred_prob_<label>`` per label and ``pred_error``. A row
whose text is empty, blank or missing gets no prediction: its label and scores are left empty and
``pred_error`` says why (the API refuses such texts too).

The input is read and scored in chunks, so memory stays flat whatever the file's size. An existing
OUTPUT is kept unless --force is given, and the input file is never overwritten.

Resumable: each finished chunk is saved under ``OUTPUT.partial/`` with a progress marker written after
it (each file written to a temporary name, then renamed, so neither is ever half-written). Interrupted,
the same command carries on from the last saved chunk, provided the input file, text column, chunk size
and model are unchanged (otherwise it starts over). The finished file is written beside OUTPUT and
renamed into place, so OUTPUT is either absent or complete.

Needs the ``score`` extra: pip install 'lstm-sentiment[score]'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from model.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, file_sha256
from model.predictor import Predictor, aggregate
from model.sentences import plan
from model.tabular import DataError, TableWriter, iter_table, parquet_rows, table_kind

PROGRESS = "progress.json"
# pred_error values: why a row has no prediction.
EMPTY, MISSING = "empty text", "missing text"


@dataclass(frozen=True)
class ScoreResult:
    output: Path
    rows: int
    resumed_from: int  # rows already scored by an earlier, interrupted run
    skipped: int = 0  # rows without a text: flagged in the error column, not scored


def score_file(
    predictor: Predictor,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    text_column: str = "text",
    chunk_size: int = 10_000,
    prefix: str = "pred_",
    encoding: str = "utf-8",
    restart: bool = False,
    progress: bool = True,
    force: bool = False,
    sentences: bool = False,
) -> ScoreResult:
    """Score every row of ``source`` and write ``output``, resuming an interrupted run when it can."""
    source, output = Path(source), Path(output)
    check_paths(source, output, force)
    partial = output.with_name(output.name + ".partial")
    marker = {
        "input_sha256": file_sha256(source),
        "text_column": text_column,
        "chunk_size": chunk_size,
        "prefix": prefix,
        "model_version": predictor.checkpoint.version,
        "sentences": sentences,
    }
    done = 0 if restart else _chunks_done(partial, marker)
    if done == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    rows = skipped = 0
    try:
        with _progress_bar(parquet_rows(source), done * chunk_size, progress) as bar:
            for k, chunk in enumerate(iter_table(source, encoding, chunk_size)):
                if k == 0:
                    columns = output_columns(predictor.labels, prefix, chunk.columns, text_column, source)
                if k >= done:
                    score = _score_sentences if sentences else _score_chunk
                    scored, flagged = score(predictor, chunk, text_column, columns, rows, source, bar)
                    _save_chunk(partial, k, scored, marker)
                    skipped += flagged
                rows += len(chunk)
        if rows == 0:
            raise DataError(f"{source}: no data rows")
    except DataError:
        if not (partial / PROGRESS).exists():  # nothing worth resuming
            shutil.rmtree(partial, ignore_errors=True)
        raise
    _assemble(partial, output, -(-rows // chunk_size))
    shutil.rmtree(partial, ignore_errors=True)
    return ScoreResult(output, rows, min(done * chunk_size, rows), skipped)


def check_paths(source: Path, output: Path, force: bool) -> None:
    """Refuse what would lose data: an unknown output type, writing over the input, or over an
    existing file without ``force``."""
    table_kind(source)
    if output.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"):
        raise DataError(
            f"{output}: unknown output type {output.suffix!r}; use .csv, .tsv, .jsonl or .parquet"
        )
    if output.resolve() == source.resolve() or (output.exists() and os.path.samefile(output, source)):
        raise DataError(f"{output} is the input file; write the scores to another file")
    if output.exists() and not force:
        raise DataError(f"{output} already exists; pass --force to replace it, or choose another output")


def output_columns(
    labels: list[str], prefix: str, existing: pd.Index, text_column: str, source: Path
) -> list[str]:
    """The added columns: label, score, one probability per label, error."""
    names = list(map(str, existing))
    if text_column not in names:
        raise DataError(f"{source}: no column {text_column!r}; columns are {', '.join(names)}")
    columns = [f"{prefix}label", f"{prefix}score", *(f"{prefix}prob_{label}" for label in labels)]
    columns.append(f"{prefix}error")
    clash = sorted(set(columns) & set(names))
    if clash:
        raise DataError(f"the input already has columns {clash}; choose another --prefix")
    return columns


def _text_or_error(value: Any, source: Path, row: int) -> tuple[str | None, str]:
    """The text to score, or None and why not. A number or an object is a mistake, not a blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, MISSING
    if not isinstance(value, str):
        raise DataError(
            f"{source}, row {row}: text must be a string, got {type(value).__name__} {value!r:.40}"
        )
    return (value, "") if value.strip() else (None, EMPTY)


def _score_chunk(
    predictor: Predictor,
    chunk: pd.DataFrame,
    text_column: str,
    columns: list[str],
    first_row: int,
    source: Path,
    bar: tqdm,
) -> tuple[pd.DataFrame, int]:
    """``chunk`` with the prediction columns added, and how many of its rows had no text."""
    checked = [
        _text_or_error(v, source, first_row + i) for i, v in enumerate(chunk[text_column].tolist(), start=1)
    ]
    keep = [i for i, (text, _) in enumerate(checked) if text is not None]
    probabilities = np.full((len(chunk), len(predictor.labels)), np.nan, dtype=np.float32)
    step = predictor.batch_size * 4  # several forward passes between progress-bar updates
    for start in range(0, len(keep), step):
        rows = keep[start : start + step]
        probabilities[rows], _ = predictor.predict_proba([checked[i][0] for i in rows])  # type: ignore[misc]
        bar.update(len(rows))
    bar.update(len(chunk) - len(keep))
    best = probabilities[keep].argmax(axis=1)
    labels = pd.array([None] * len(chunk), dtype="string")  # string-typed even when every row is blank
    labels[keep] = np.asarray(predictor.labels, dtype=object)[best]
    scores = np.full(len(chunk), np.nan, dtype=np.float32)
    scores[keep] = probabilities[keep, best]
    added: dict[str, Any] = {columns[0]: labels, columns[1]: scores}
    added.update({name: probabilities[:, k] for k, name in enumerate(columns[2:-1])})
    added[columns[-1]] = pd.array([error for _, error in checked], dtype="string")
    scored = pd.concat([chunk.reset_index(drop=True), pd.DataFrame(added)], axis=1)
    return scored, len(chunk) - len(keep)


def _score_sentences(
    predictor: Predictor,
    chunk: pd.DataFrame,
    text_column: str,
    columns: list[str],
    first_row: int,
    source: Path,
    bar: tqdm,
) -> tuple[pd.DataFrame, int]:
    """One row per sentence of each text: its document (the input row, from 1), the sentence's number
    in it and character span, the sentence, and its prediction (a long sentence's windows averaged, as
    the service reads it). A row without a text gives one row with only ``pred_error``."""
    max_words = max(1, predictor.checkpoint.config.max_length * 3 // 4)
    rows: list[dict[str, Any]] = []
    flagged = 0
    for i, value in enumerate(chunk[text_column].tolist(), start=1):
        document = first_row + i
        text, error = _text_or_error(value, source, document)
        if text is None:
            rows.append({"document": document, columns[-1]: error})
            flagged += 1
            continue
        planned = plan(text, max_words)
        probabilities, _ = predictor.predict_proba([text[a:b] for spans in planned for a, b in spans])
        k = 0
        for n, spans in enumerate(planned, start=1):
            part = probabilities[k : k + len(spans)]
            k += len(spans)
            mean = aggregate(part, [b - a for a, b in spans])
            start, end = spans[0][0], spans[-1][1]
            best = int(mean.argmax())
            row = {"document": document, "sentence": n, "start": start, "end": end, "text": text[start:end]}
            row |= {columns[0]: predictor.labels[best], columns[1]: float(mean[best])}
            row |= {name: float(mean[j]) for j, name in enumerate(columns[2:-1])}
            rows.append(row | {columns[-1]: ""})
        bar.update(1)
    bar.update(flagged)
    order = ["document", "sentence", "start", "end", "text", *columns]
    scored = pd.DataFrame(rows, columns=order)
    for name in ("sentence", "start", "end"):
        scored[name] = scored[name].astype("Int64")
    for name in ("text", columns[0], columns[-1]):
        scored[name] = scored[name].astype("string")
    return scored, flagged


def _save_chunk(partial: Path, k: int, scored: pd.DataFrame, marker: dict[str, Any]) -> None:
    """Chunk ``k``, then the marker that says it is there: a crash between the two redoes one chunk."""
    _atomic(partial / _part(k), lambda path: scored.to_parquet(path, index=False))
    _atomic(partial / PROGRESS, lambda path: _write_json(path, {**marker, "chunks_done": k + 1}))


def _assemble(partial: Path, output: Path, chunks: int) -> None:
    """The saved chunks, one at a time, into OUTPUT's format."""

    def write(path: Path) -> None:
        with TableWriter(path, output.suffix) as writer:
            for k in range(chunks):
                writer.write(pd.read_parquet(partial / _part(k)))

    _atomic(output, write)


def _part(k: int) -> str:
    return f"part-{k:06d}.parquet"


def _progress_bar(total: int | None, initial: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, unit="text", disable=not enabled)


def _chunks_done(partial: Path, marker: dict[str, Any]) -> int:
    """Chunks saved by an earlier run of the same job; 0 when there is none or it was another job."""
    try:
        saved = json.loads((partial / PROGRESS).read_text())
    except (OSError, ValueError):
        return 0
    done = saved.pop("chunks_done", 0)
    if saved != marker:
        print(
            f"{partial}: left by a different job (input, options or model changed); starting over",
            file=sys.stderr,
        )
        return 0
    return int(done)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary sibling, flush it to disk, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every flag's help (not for switches that are off), the module docstring as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.score", description=__doc__, formatter_class=_HelpFormatter
    )
    parser.add_argument("input", type=Path, help="CSV, TSV, JSONL or Parquet file with a text column")
    parser.add_argument("output", type=Path, help="where to write the scored file (format from its suffix)")
    parser.add_argument("--text-column", default="text", help="column holding the texts")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint directory")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per forward pass")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        help="rows read, scored and saved at a time: bounds memory, and the most an interruption loses",
    )
    parser.add_argument("--prefix", default="pred_", help="prefix of the added columns")
    parser.add_argument(
        "--sentences",
        action="store_true",
        help="one output row per sentence: document (input row), sentence, start, end, text, prediction",
    )
    parser.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL input")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists (never the input)")
    parser.add_argument("--restart", action="store_true", help="ignore an interrupted run's saved chunks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.chunk_size < 1:
        parser.error("--batch-size and --chunk-size must be at least 1")
    try:
        check_paths(args.input, args.output, args.force)  # before the model loads
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.batch_size)
        result = score_file(
            predictor, args.input, args.output, args.text_column, args.chunk_size, args.prefix,
            args.encoding, args.restart, not args.no_progress, args.force, args.sentences,
        )  # fmt: skip
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: run the same command again to carry on from {args.output}.partial",
            file=sys.stderr,
        )
        return 130
    resumed = f" ({result.resumed_from} of them by an earlier run)" if result.resumed_from else ""
    flagged = f"; {result.skipped} without a text, flagged in {args.prefix}error" if result.skipped else ""
    print(f"scored {result.rows} rows{resumed}{flagged} -> {result.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
