"""Batch scoring: every format in and out, predictions beside the input columns, resuming after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from model import Predictor
from service.score import main, score_file
from training.data import DataError, read_table

TEXTS = [
    "i love this , it is wonderful",
    "terrible service and awful food",
    "the meeting is at noon today",
    "great movie",
    "",
    "i hate it",
    "the report was published on monday",
]
PRED = ["pred_label", "pred_score", "pred_prob_negative", "pred_prob_neutral", "pred_prob_positive"]


class CountingPredictor(Predictor):
    """Counts the texts it scores; raises KeyboardInterrupt on call number ``interrupt_at`` (1-based)."""

    texts_seen = 0
    calls = 0
    interrupt_at: int | None = None

    def predict_proba(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.texts_seen += len(texts)
        return super().predict_proba(texts)


@pytest.fixture
def counting(tiny_checkpoint: Path) -> CountingPredictor:
    predictor = CountingPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=1)
    assert isinstance(predictor, CountingPredictor)
    return predictor


def write_input(path: Path) -> Path:
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": "x"})
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path


@pytest.mark.parametrize(
    ("src", "dst"), [(".csv", ".csv"), (".jsonl", ".parquet"), (".parquet", ".tsv"), (".tsv", ".jsonl")]
)
def test_predictions_land_beside_the_input_columns(
    predictor: Predictor, tmp_path: Path, src: str, dst: str
) -> None:
    source = write_input(tmp_path / f"in{src}")
    result = score_file(predictor, source, tmp_path / f"out{dst}", chunk_size=3, progress=False)
    assert result.rows == len(TEXTS) and result.resumed_from == 0
    out = read_table(result.output)
    assert list(out.columns) == ["id", "text", "label", *PRED]
    assert out["id"].tolist() == [f"r{i}" for i in range(len(TEXTS))]
    expected = predictor.predict(TEXTS)
    assert out["pred_label"].tolist() == [p.label for p in expected]
    assert out["pred_score"].astype(float).tolist() == pytest.approx([p.score for p in expected], abs=1e-6)
    assert out[PRED[2:]].astype(float).sum(axis=1).tolist() == pytest.approx([1.0] * len(TEXTS), abs=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"in{src}", f"out{dst}"])  # no leftovers


def test_an_interrupted_run_resumes_where_it_stopped(counting: CountingPredictor, tmp_path: Path) -> None:
    source, output = write_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    counting.interrupt_at = 3  # chunks of 2 texts, one call each: chunks 1 and 2 are saved, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        score_file(counting, source, output, chunk_size=2, progress=False)
    assert not output.exists()
    marker = json.loads((tmp_path / "out.csv.partial" / "progress.json").read_text())
    assert marker["chunks_done"] == 2 and marker["rows"] == len(TEXTS)

    counting.interrupt_at, counting.texts_seen = None, 0
    result = score_file(counting, source, output, chunk_size=2, progress=False)
    assert result.resumed_from == 4 and counting.texts_seen == len(TEXTS) - 4  # only the rest was scored
    fresh = score_file(counting, source, tmp_path / "fresh.csv", chunk_size=2, progress=False)
    pd.testing.assert_frame_equal(read_table(output), read_table(fresh.output))
    assert not (tmp_path / "out.csv.partial").exists()


def test_a_changed_input_starts_over(counting: CountingPredictor, tmp_path: Path) -> None:
    source, output = write_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    counting.interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        score_file(counting, source, output, chunk_size=2, progress=False)
    source.write_text(source.read_text().replace("great movie", "awful movie"))
    counting.interrupt_at, counting.texts_seen = None, 0
    result = score_file(counting, source, output, chunk_size=2, progress=False)
    assert result.resumed_from == 0 and counting.texts_seen == len(TEXTS)
    assert "awful movie" in read_table(output)["text"].tolist()


def test_restart_ignores_saved_chunks(counting: CountingPredictor, tmp_path: Path) -> None:
    source, output = write_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    counting.interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        score_file(counting, source, output, chunk_size=2, progress=False)
    counting.interrupt_at = None
    assert score_file(counting, source, output, chunk_size=2, restart=True, progress=False).resumed_from == 0


@pytest.mark.parametrize(
    ("rows", "options", "says"),
    [
        ([{"body": "hi"}], {}, "no column 'text'"),
        ([{"text": "ok"}, {"text": 5}], {}, "row 2: text must be a string"),
        ([{"text": "ok", "pred_label": "x"}], {}, "choose another --prefix"),
        ([{"text": "ok"}], {"output": "out.xlsx"}, "unknown output type"),
    ],
)
def test_bad_input_is_named(
    predictor: Predictor, tmp_path: Path, rows: list[dict], options: dict[str, str], says: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=says):
        score_file(predictor, source, tmp_path / options.get("output", "out.csv"), progress=False)


def test_command_line(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_input(tmp_path / "in.csv")
    argv = [
        str(source),
        str(tmp_path / "out.parquet"),
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
    ]
    assert main([*argv, "--batch-size", "2", "--chunk-size", "3", "--no-progress"]) == 0
    assert f"scored {len(TEXTS)} rows" in capsys.readouterr().err
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == len(TEXTS)
    assert main([*argv, "--text-column", "body"]) == 2
    assert "no column 'body'" in capsys.readouterr().err
