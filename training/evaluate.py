"""``python -m training.evaluate CHECKPOINT DATA``: the training report for any labelled file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from model.checkpoint import CheckpointError
from model.predictor import Predictor
from training.data import DataError, Dataset, load_dataset
from training.metrics import classification_report, format_report


def evaluate(predictor: Predictor, data: Dataset) -> dict:
    """Classification report of ``predictor`` on ``data``, whose labels must be the model's."""
    unknown = sorted(set(data.labels) - set(predictor.labels))
    if unknown:
        raise DataError(f"{data.source}: labels {unknown} are not among the model's {predictor.labels}")
    index = {label: k for k, label in enumerate(predictor.labels)}
    probabilities, _ = predictor.predict_proba(data.texts)
    truth = np.array([index[label] for label in data.labels])
    return classification_report(truth, probabilities, predictor.labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint directory")
    parser.add_argument("data", type=Path, help="labelled CSV/TSV/JSONL/Parquet file")
    parser.add_argument("--text-column", default="text", help="column holding the texts")
    parser.add_argument("--label-column", default="label", help="column holding the labels")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL files")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per forward pass")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="also write the confusion matrix PNG here")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.batch_size)
        data = load_dataset(args.data, args.text_column, args.label_column, args.encoding)
        report = evaluate(predictor, data)
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, title=f"{args.data} on {args.checkpoint}"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plots:
        from training.plots import confusion_matrix

        args.plots.mkdir(parents=True, exist_ok=True)
        print(f"wrote {confusion_matrix(report, args.plots / 'confusion_matrix.png', args.data.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
