"""Batch scoring: every format in and out, predictions beside the input columns, blank rows flagged,
outputs never overwritten by accident, resuming after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from model import Predictor
from model.tabular import DataError, read_table
from service.score import main, score_file

TEXTS = [
    "i love this , it is wonderful",
    "terrible service and awful food",
    "the meeting is at noon today",
    "great movie",
    "",
    "i hate it",
    "the report was published on monday",
]
PRED = [
    "pred_label", "pred_score", "pred_prob_negative", "pred_prob_neutral", "pred_prob_positive", "pred_error",
]  # fmt: skip
BLANK = 4  # the row of TEXTS without a text


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
    scored = [i for i in range(len(TEXTS)) if i != BLANK]
    expected = predictor.predict([TEXTS[i] for i in scored])
    rows = out.iloc[scored]
    assert rows["pred_label"].tolist() == [p.label for p in expected]
    assert rows["pred_score"].astype(float).tolist() == pytest.approx([p.score for p in expected], abs=1e-6)
    assert rows[PRED[2:-1]].astype(float).sum(axis=1).tolist() == pytest.approx([1.0] * len(scored), abs=1e-5)
    assert rows["pred_error"].fillna("").tolist() == [""] * len(scored)
    # The blank row: no made-up answer, and the reason.
    blank = out.iloc[BLANK]
    assert blank["pred_error"] == "empty text"
    assert pd.isna(blank["pred_label"]) or blank["pred_label"] == ""
    assert all(pd.isna(blank[c]) or blank[c] == "" for c in PRED[1:-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"in{src}", f"out{dst}"])  # no leftovers


def test_an_interrupted_run_resumes_where_it_stopped(counting: CountingPredictor, tmp_path: Path) -> None:
    source, output = write_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    counting.interrupt_at = 3  # chunks of 2 texts, one call each: chunks 1 and 2 are saved, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        score_file(counting, source, output, chunk_size=2, progress=False)
    assert not output.exists()
    marker = json.loads((tmp_path / "out.csv.partial" / "progress.json").read_text())
    assert marker["chunks_done"] == 2

    counting.interrupt_at, counting.texts_seen = None, 0
    result = score_file(counting, source, output, chunk_size=2, progress=False)
    assert result.resumed_from == 4
    assert counting.texts_seen == len(TEXTS) - 4 - 1  # only the rest was scored, less the blank row
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
    assert result.resumed_from == 0 and counting.texts_seen == len(TEXTS) - 1
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
    assert main([*argv, "--text-column", "body", "--force"]) == 2
    assert "no column 'body'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.parquet"]  # nothing left behind


def test_blank_and_missing_texts_are_flagged_not_scored(counting: CountingPredictor, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"text": "great"}, {"text": "   "}, {"text": None}, {"id": 4}, {"text": "awful"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = score_file(counting, source, tmp_path / "out.jsonl", chunk_size=2, progress=False)
    assert (result.rows, result.skipped, counting.texts_seen) == (5, 3, 2)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["pred_error"] for r in out] == ["", "empty text", "missing text", "missing text", ""]
    for r in out[1:4]:
        assert r["pred_label"] is None and r["pred_score"] is None and r["pred_prob_positive"] is None
    assert out[0]["pred_label"] in ("negative", "neutral", "positive") and out[0]["pred_score"] > 0


def test_an_existing_output_needs_force_and_the_input_is_never_overwritten(
    predictor: Predictor, tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, output = write_input(tmp_path / "in.csv"), tmp_path / "out.csv"
    output.write_text("precious\n")
    with pytest.raises(DataError, match="already exists; pass --force"):
        score_file(predictor, source, output, progress=False)
    assert output.read_text() == "precious\n"
    score_file(predictor, source, output, progress=False, force=True)
    assert len(read_table(output)) == len(TEXTS)

    before = source.read_bytes()
    for target in (source, tmp_path / "." / "in.csv"):
        with pytest.raises(DataError, match="is the input file"):
            score_file(predictor, source, target, progress=False, force=True)
    argv = [str(source), str(source), "--force", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert main(argv) == 2 and "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_the_input_is_read_in_chunks(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    import service.score as score

    source = write_input(tmp_path / f"in{suffix}")
    sizes: list[int] = []
    chunks = score.iter_table

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        for chunk in chunks(*args, **kwargs):
            sizes.append(len(chunk))
            yield chunk

    monkeypatch.setattr(score, "iter_table", recording)
    result = score_file(predictor, source, tmp_path / f"out{suffix}", chunk_size=3, progress=False)
    assert sizes == [3, 3, 1] and result.rows == len(TEXTS)
    assert read_table(tmp_path / f"out{suffix}")["id"].tolist() == [f"r{i}" for i in range(len(TEXTS))]


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: text)", "(default: 256)", "(default: 10000)", "(default: pred_)"):
        assert default in text


def test_sentences_give_one_row_per_sentence_with_its_document_and_exact_span(
    counting: CountingPredictor, tmp_path: Path
) -> None:
    texts = ["Great screen 😍. Awful battery!\r\nWould not buy again.", "", "fine"]
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": [7, 8, 9], "text": texts}).to_csv(source, index=False)
    result = score_file(counting, source, tmp_path / "out.csv", progress=False, sentences=True)
    out = read_table(result.output)
    assert result.skipped == 1
    out["document"] = out["document"].astype(int)  # read_table reads every column as text
    assert out["document"].tolist() == [1, 1, 1, 2, 3]
    first = out[out["document"] == 1]
    assert [int(n) for n in first["sentence"]] == [1, 2, 3]
    for start, end, sentence in zip(first["start"], first["end"], first["text"], strict=True):
        assert texts[0][int(float(start)) : int(float(end))] == sentence
    assert first["text"].tolist() == ["Great screen 😍.", "Awful battery!", "Would not buy again."]
    assert out.loc[out["document"] == 2, "pred_error"].tolist() == ["empty text"]
    assert set(first["pred_label"]) <= set(counting.labels)
