"""``python -m training.evaluate``: the training report for any labelled file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import WEIGHTS
from model.predictor import Predictor
from tests.conftest import CORPUS, LABELS
from training.data import DataError, Dataset
from training.evaluate import evaluate, main
from training.metrics import classification_report

GOLD = ["positive", "positive", "negative", "negative", "neutral", "neutral"]  # the CORPUS sentences


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "labelled.jsonl"
    rows = zip(CORPUS, GOLD, strict=True)
    path.write_text("".join(json.dumps({"review": text, "stars": gold}) + "\n" for text, gold in rows))
    return path


def test_report_matches_the_predictors_probabilities(predictor: Predictor) -> None:
    report = evaluate(predictor, Dataset(CORPUS, GOLD, "corpus"))
    probabilities, _ = predictor.predict_proba(CORPUS)
    truth = np.array([LABELS.index(g) for g in GOLD])
    assert report == classification_report(truth, probabilities, LABELS)
    assert report["examples"] == 6 and sum(map(sum, report["confusion_matrix"])) == 6


def test_labels_unknown_to_the_model(predictor: Predictor) -> None:
    with pytest.raises(DataError, match=r"corpus: labels \['angry'\] are not among the model's"):
        evaluate(predictor, Dataset(["x", "y"], ["angry", "positive"], "corpus"))


def test_main_prints_the_report_and_writes_json(
    tiny_checkpoint: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    argv = [str(tiny_checkpoint), str(data_file), "--text-column", "review", "--label-column", "stars"]
    assert main([*argv, "--device", "cpu", "--batch-size", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{data_file} on {tiny_checkpoint}\nexamples 6  accuracy ")
    for label in LABELS:
        assert label in printed
    report = json.loads(out.read_text())
    assert report["examples"] == 6 and report["labels"] == LABELS
    assert f"accuracy {report['accuracy']:.4f}" in printed


def test_main_with_a_broken_checkpoint(
    tiny_checkpoint: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = Path(shutil.copytree(tiny_checkpoint, tmp_path / "broken"))
    (broken / WEIGHTS).unlink()
    assert main([str(broken), str(data_file), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"error: {broken / WEIGHTS} is missing\n"


def test_main_with_bad_data(
    tiny_checkpoint: Path, data_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tiny_checkpoint), str(data_file), "--device", "cpu"]) == 2  # default columns absent
    assert capsys.readouterr().err.startswith(f"error: {data_file}: no column 'text'")


def test_a_file_without_one_of_the_models_labels_averages_over_the_others(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "binary.csv"
    rows = [(t, g) for t, g in zip(CORPUS, GOLD, strict=True) if g != "neutral"]
    path.write_text("text,label\n" + "".join(f'"{t}",{g}\n' for t, g in rows))
    out = tmp_path / "report.json"
    assert main([str(tiny_checkpoint), str(path), "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["absent_labels"] == ["neutral"] and report["examples"] == 4
    f1 = [report["per_class"][label]["f1"] for label in ("negative", "positive")]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 2)
    printed = capsys.readouterr().out
    assert "note: no example of 'neutral'; macro averages are over the other labels" in printed
