"""``python -m service.score INPUT OUTPUT``: score a whole file offline, no server needed.

Reads CSV, TSV, JSONL or Parquet; writes the same format (from OUTPUT's suffix) with every input column
followed by ``pred_label``, ``pred_score`` and one ``pred_prob_<label>`` per label.

Resumable: rows are scored in chunks, and each finished chunk is saved under ``OUTPUT.partial/`` with a
progress marker written after it (each file written to a temporary name, then renamed, so neither is
ever half-written). Interrupted, the same command carries on from the last saved chunk, provided the
input file, text column, chunk size and model are unchanged (otherwise it starts over). The finished
file is written beside OUTPUT and renamed into place, so OUTPUT is either absent or complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from model.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, file_sha256
from model.predictor import Predictor
from training.data import SUFFIXES, DataError, read_table

PROGRESS = "progress.json"


@dataclass(frozen=True)
class ScoreResult:
    output: Path
    rows: int
    resumed_from: int  # rows already scored by an earlier, interrupted run


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
) -> ScoreResult:
    """Score every row of ``source`` and write ``output``, resuming an interrupted run when it can."""
    source, output = Path(source), Path(output)
    if output.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{output}: unknown output type {output.suffix!r}; use .csv, .tsv, .jsonl or .parquet"
        )
    frame = read_table(source, encoding)
    texts = _texts(frame, source, text_column)
    columns = _columns(predictor.labels, prefix, frame.columns)
    partial = output.with_name(output.name + ".partial")
    marker = {
        "input_sha256": file_sha256(source),
        "text_column": text_column,
        "chunk_size": chunk_size,
        "model_version": predictor.checkpoint.version,
        "rows": len(texts),
    }
    done = 0 if restart else _chunks_done(partial, marker)
    if done == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    chunks = range(0, len(texts), chunk_size)
    resumed_from = min(done * chunk_size, len(texts))
    with tqdm(total=len(texts), initial=resumed_from, unit="text", disable=not progress) as bar:
        for k, start in enumerate(chunks[done:], start=done):
            part = _score_chunk(predictor, texts[start : start + chunk_size], columns, bar)
            _atomic(partial / f"part-{k:06d}.parquet", lambda path, part=part: part.to_parquet(path))
            _atomic(partial / PROGRESS, lambda path, k=k: _write_json(path, {**marker, "chunks_done": k + 1}))
    scored = pd.concat([pd.read_parquet(partial / f"part-{k:06d}.parquet") for k in range(len(chunks))])
    result = pd.concat([frame.reset_index(drop=True), scored.reset_index(drop=True)], axis=1)
    _atomic(output, lambda path: write_table(result, path, output.suffix))
    shutil.rmtree(partial, ignore_errors=True)
    return ScoreResult(output, len(texts), resumed_from)


def _texts(frame: pd.DataFrame, source: Path, column: str) -> list[str]:
    if column not in frame.columns:
        raise DataError(f"{source}: no column {column!r}; columns are {', '.join(map(str, frame.columns))}")
    if frame.empty:
        raise DataError(f"{source}: no data rows")
    texts = frame[column].tolist()
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise DataError(
                f"{source}, row {row}: text must be a string, got {type(text).__name__} {text!r:.40}"
            )
    return texts


def _columns(labels: list[str], prefix: str, existing: pd.Index) -> list[str]:
    columns = [f"{prefix}label", f"{prefix}score", *(f"{prefix}prob_{label}" for label in labels)]
    clash = sorted(set(columns) & set(map(str, existing)))
    if clash:
        raise DataError(f"the input already has columns {clash}; choose another --prefix")
    return columns


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
    return done


def _score_chunk(predictor: Predictor, texts: list[str], columns: list[str], bar: tqdm) -> pd.DataFrame:
    probabilities = np.empty((len(texts), len(predictor.labels)), dtype=np.float32)
    step = predictor.batch_size * 4  # several forward passes between progress-bar updates
    for start in range(0, len(texts), step):
        batch = texts[start : start + step]
        probabilities[start : start + len(batch)], _ = predictor.predict_proba(batch)
        bar.update(len(batch))
    best = probabilities.argmax(axis=1)
    data: dict[str, Any] = {
        columns[0]: np.asarray(predictor.labels, dtype=object)[best],
        columns[1]: probabilities[np.arange(len(texts)), best],
    }
    data.update({name: probabilities[:, k] for k, name in enumerate(columns[2:])})
    return pd.DataFrame(data)


def write_table(frame: pd.DataFrame, path: Path, suffix: str) -> None:
    """Write ``frame`` in the format of ``suffix`` (that of the final name, not of a temporary one)."""
    kind = SUFFIXES[suffix.lower()]
    if kind == "csv":
        frame.to_csv(path, index=False, sep="\t" if suffix.lower() == ".tsv" else ",")
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)


def _atomic(path: Path, write: Any) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="CSV, TSV, JSONL or Parquet file with a text column")
    parser.add_argument("output", type=Path, help="where to write the scored file (format from its suffix)")
    parser.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint directory")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per forward pass (default: 256)")
    parser.add_argument(
        "--chunk-size", type=int, default=10_000, help="rows saved at a time: the most an interruption loses"
    )
    parser.add_argument("--prefix", default="pred_", help="prefix of the added columns (default: pred_)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL input")
    parser.add_argument("--restart", action="store_true", help="ignore an interrupted run's saved chunks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.chunk_size < 1:
        parser.error("--batch-size and --chunk-size must be at least 1")
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.batch_size)
        result = score_file(
            predictor, args.input, args.output, args.text_column, args.chunk_size, args.prefix,
            args.encoding, args.restart, not args.no_progress,
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
    print(f"scored {result.rows} rows{resumed} -> {result.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
