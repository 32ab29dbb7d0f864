"""Classification metrics against cases worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.metrics import (
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    format_report,
)

LABELS = ["neg", "neu", "pos"]


def one_hot(predicted: list[int], confidence: float = 0.8, labels: int = 3) -> np.ndarray:
    """Probabilities whose argmax is ``predicted``, with that class at ``confidence``."""
    probs = np.full((len(predicted), labels), (1 - confidence) / (labels - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


# true 0 0 1 1 2 2, predicted 0 1 1 1 2 0:
#   confusion rows [1 1 0] [0 2 0] [1 0 1]
#   precision 1/2, 2/3, 1;  recall 1/2, 1, 1/2;  F1 1/2, 4/5, 2/3
TRUE = [0, 0, 1, 1, 2, 2]
PRED = [0, 1, 1, 1, 2, 0]


def test_confusion_matrix_rows_are_truth() -> None:
    matrix = confusion_matrix(np.array(TRUE), np.array(PRED), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_report_by_hand() -> None:
    report = classification_report(TRUE, one_hot(PRED), LABELS)
    assert report["examples"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    per_class = report["per_class"]
    assert [per_class[k]["precision"] for k in LABELS] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [per_class[k]["recall"] for k in LABELS] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert [per_class[k]["f1"] for k in LABELS] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert [per_class[k]["support"] for k in LABELS] == [2, 2, 2]
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["labels"] == LABELS
    json.dumps(report)  # stored in the checkpoint as is


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    report = classification_report([0, 1, 2], one_hot([0, 1, 1]), LABELS)
    assert report["per_class"]["pos"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_perfect_predictions() -> None:
    report = classification_report([2, 0, 1], one_hot([2, 0, 1], confidence=1.0), LABELS)
    assert report["accuracy"] == report["macro_f1"] == 1.0
    assert report["ece"] == pytest.approx(0.0)


def test_ece_by_hand() -> None:
    # Two answers at 0.9 with one right (|0.5 - 0.9| = 0.4), two at 0.6 both right (|1 - 0.6| = 0.4):
    # each group is half the data, so ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert expected_calibration_error(probs, np.array([0, 1, 1, 1])) == pytest.approx(0.4)


def test_ece_of_calibrated_confidence_is_zero() -> None:
    # Four answers at 0.75 confidence, three of them right.
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)


def test_empty_report() -> None:
    report = classification_report([], np.empty((0, 3)), LABELS)
    assert report["examples"] == 0
    assert report["accuracy"] == report["ece"] == report["macro_f1"] == 0.0


def test_format_report_shows_every_number() -> None:
    text = format_report(classification_report(TRUE, one_hot(PRED), LABELS), title="test split")
    lines = text.splitlines()
    assert lines[0] == "test split"
    assert "accuracy 0.6667" in lines[1] and "macro-F1 0.6556" in lines[1]
    assert any(line.split() == ["neu", "0.6667", "1.0000", "0.8000", "2"] for line in lines)
    assert lines[-3:] == [
        f"{'neg':<12}{1:>10}{1:>10}{0:>10}",
        f"{'neu':<12}{0:>10}{2:>10}{0:>10}",
        f"{'pos':<12}{1:>10}{0:>10}{1:>10}",
    ]


def test_macro_averages_leave_out_labels_without_an_example() -> None:
    # true 0 0 2 2, predicted 0 1 2 2: no "neu" example, one text predicted "neu".
    #   F1 neg 2/3, pos 1 (neu has no recall: left out, not counted as 0)
    report = classification_report([0, 0, 2, 2], one_hot([0, 1, 2, 2]), LABELS)
    assert report["absent_labels"] == ["neu"]
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert report["macro_recall"] == pytest.approx((1 / 2 + 1.0) / 2)
    assert report["macro_precision"] == pytest.approx((1.0 + 1.0) / 2)
    assert report["per_class"]["neu"]["support"] == 0
    assert "note: no example of 'neu'; macro averages are over the other labels" in format_report(report)
    assert "note:" not in format_report(classification_report(TRUE, one_hot(PRED), LABELS))
