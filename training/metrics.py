"""Classification report: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, ECE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> np.ndarray:
    """(L, L) counts; rows are true labels, columns predicted."""
    flat = np.bincount(y_true * num_labels + y_pred, minlength=num_labels * num_labels)
    return flat.reshape(num_labels, num_labels)


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE over equal-width confidence bins (Guo et al. 2017)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_report(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Everything the CLI prints and the checkpoint stores, as plain JSON-ready values.

    Macro averages are over the labels that occur in ``y_true``: a label with no example has no recall,
    and counting its F1 as 0 would understate the model (``absent_labels`` names those left out)."""
    truth = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(axis=1)
    matrix = confusion_matrix(truth, pred, len(labels))
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0 if actual.any() else np.ones_like(actual, dtype=bool)
    return {
        "examples": len(truth),
        "accuracy": float((pred == truth).mean()) if len(truth) else 0.0,
        "macro_f1": float(f1[present].mean()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "absent_labels": [label for label, here in zip(labels, present, strict=True) if not here],
        "ece": expected_calibration_error(probs, truth) if len(truth) else 0.0,
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for label, p, r, f, n in zip(labels, precision, recall, f1, actual, strict=True)
        },
        "labels": list(labels),
        "confusion_matrix": matrix.tolist(),
    }


def format_report(report: dict[str, Any], title: str = "") -> str:
    """The report as a fixed-width table for a terminal."""
    labels = report["labels"]
    width = max(12, *(len(label) + 2 for label in labels))
    lines = [title] if title else []
    lines.append(
        f"examples {report['examples']}  accuracy {report['accuracy']:.4f}  "
        f"macro-F1 {report['macro_f1']:.4f}  ECE {report['ece']:.4f}"
    )
    if report.get("absent_labels"):
        absent = ", ".join(map(repr, report["absent_labels"]))
        lines.append(f"note: no example of {absent}; macro averages are over the other labels")
    lines.append(f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for label, row in report["per_class"].items():
        lines.append(
            f"{label:<{width}}{row['precision']:>10.4f}{row['recall']:>10.4f}"
            f"{row['f1']:>10.4f}{row['support']:>10}"
        )
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(f"{'':<{width}}" + "".join(f"{label[:9]:>10}" for label in labels))
    for label, row in zip(labels, report["confusion_matrix"], strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"{n:>10}" for n in row))
    return "\n".join(lines)
