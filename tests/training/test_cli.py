"""``python -m training`` end to end on a tiny generated file: train, save, load, evaluate, serve."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from model.checkpoint import load_checkpoint, save_checkpoint
from service.app import create_app
from service.settings import Settings
from tests.conftest import tiny_checkpoint_object
from training import calibration, cli, evaluate
from training.cli import build_parser, main
from training.loop import Loop
from training.resume import ResumeState, state_path

WORDS = {
    "negative": ["hate", "awful", "worst", "terrible"],
    "neutral": ["meeting", "monday", "report", "noon"],
    "positive": ["love", "great", "wonderful", "happy"],
}
FILLER = ["the", "a", "today", "this", "is", "it", "was"]
FAST = ["--tiny", "--no-glove", "--no-progress"]


def write_corpus(path: Path, rows: int = 120, seed: int = 0) -> Path:
    """Short texts whose label shows in their words, every class equally often."""
    rng = random.Random(seed)
    labels = list(WORDS)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = labels[i % len(labels)]
            words = rng.choices(FILLER, k=3) + rng.choices(WORDS[label], k=2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])
    return path


@dataclass
class Run:
    code: int
    out: str
    err: str


def run(argv: list[str], entry=main) -> Run:  # type: ignore[no-untyped-def]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = entry(argv)
    return Run(code, out.getvalue(), err.getvalue())


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``'s parent, with its bytes: what a failed run must not change."""
    return {
        str(p.relative_to(directory.parent)): p.read_bytes()
        for p in directory.parent.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "tweets.csv")


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """One uninterrupted tiny training run, shared by the tests below."""
    output = tmp_path_factory.mktemp("out") / "model"
    return output, run(["--data", str(corpus), "--output", str(output), *FAST])


@pytest.mark.slow
def test_train_save_load_evaluate_serve(corpus: Path, trained: tuple[Path, Run]) -> None:
    output, result = trained
    assert result.code == 0, result.err
    assert "epoch 1:" in result.out and "epoch 2:" in result.out
    assert "test split" in result.out and "confusion matrix" in result.out
    assert result.out.rstrip().endswith(f"saved {output}")
    assert not state_path(output).exists()  # per-epoch state is dropped once the run is complete

    checkpoint = load_checkpoint(output)
    assert checkpoint.labels == ["negative", "neutral", "positive"]
    assert checkpoint.config.hidden_size == 16 and checkpoint.training["epochs"] == 2
    assert checkpoint.metrics["examples"] == {"train": 96, "val": 12, "test": 12}
    assert checkpoint.metrics["test"]["examples"] == 12
    assert len(checkpoint.metrics["history"]) == 2
    data = checkpoint.provenance["data"]
    assert data["path"] == str(corpus) and data["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert checkpoint.provenance["seed"] == 13 and checkpoint.provenance["code_version"]
    assert checkpoint.provenance["package_version"] == cli.package_version() != "unknown"

    report = run([str(output), str(corpus), "--device", "cpu"], entry=evaluate.main)
    assert report.code == 0, report.err
    assert report.out.startswith(f"{corpus} on {output}\nexamples 120  accuracy ")
    assert "confusion matrix" in report.out

    settings = Settings(_env_file=None, checkpoint=output, device="cpu", torch_threads=1)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json={"texts": ["I love it, wonderful", "worst day, I hate it"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "sentiment", "version": checkpoint.version}
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert set(prediction["probabilities"]) == set(checkpoint.labels)
        assert prediction["label"] in checkpoint.labels


BAD_DATA = {
    "missing-column": ("data.csv", b"sentence,label\nhello,positive\n", "no column 'text'"),
    "empty-file": ("data.csv", b"", "the file is empty"),
    "one-class": ("data.csv", b"text,label\n" + b"fine,positive\n" * 30, "only one class"),
    "non-text": ("data.jsonl", b'{"text": "ok", "label": "a"}\n{"text": 3, "label": "b"}\n', "row 2"),
    "undecodable": ("data.csv", b"text,label\nok,a\ncaf\xe9,b\n", "line 3: bytes not valid utf-8"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_exits_2_and_keeps_the_saved_checkpoint(tmp_path: Path, case: str) -> None:
    name, content, problem = BAD_DATA[case]
    data = tmp_path / "input" / name
    data.parent.mkdir()
    data.write_bytes(content)
    output = tmp_path / "ckpt" / "model"
    save_checkpoint(tiny_checkpoint_object(), output)
    before = snapshot(output)

    result = run(["--data", str(data), "--output", str(output), "--force", *FAST])
    assert result.code == 2
    assert result.err.startswith(f"error: {data}") and problem in result.err
    assert snapshot(output) == before


def test_validation_labels_unseen_in_training(corpus: Path, tmp_path: Path) -> None:
    val = tmp_path / "val.csv"
    val.write_text("text,label\nso angry,angry\nfine,positive\n")
    result = run(["--data", str(corpus), "--val", str(val), "--output", str(tmp_path / "out"), *FAST])
    assert result.code == 2
    assert result.err == f"error: {val}: validation labels ['angry'] never occur in training data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.csv"]


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--embedding-dim", "16"], "GloVe vectors are 50-dimensional"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "val_fraction + test_fraction"),
    ],
)
def test_inconsistent_options_exit_2(corpus: Path, tmp_path: Path, flags: list[str], problem: str) -> None:
    result = run(["--data", str(corpus), "--output", str(tmp_path / "out"), "--no-progress", *flags])
    assert result.code == 2 and problem in result.err
    assert list(tmp_path.iterdir()) == []


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    train = write_corpus(tmp_path / "train.csv", rows=60)
    val = write_corpus(tmp_path / "val.csv", rows=9, seed=1)
    test = write_corpus(tmp_path / "test.csv", rows=15, seed=2)
    before = sorted(tmp_path.rglob("*"))
    output = tmp_path / "out"
    argv = ["--data", str(train), "--val", str(val), "--test", str(test), "--output", str(output)]
    result = run([*argv, "--dry-run", "--no-progress"])
    assert result.code == 0, result.err
    assert "examples 15  accuracy" in result.out  # the --test file, not a split of --data
    assert result.out.rstrip().endswith("dry run: nothing saved")
    assert sorted(tmp_path.rglob("*")) == before


class Crash(Exception):
    """Stands in for a power cut after the first epoch."""


@pytest.mark.slow
def test_resume_continues_from_the_saved_epoch(
    corpus: Path, trained: tuple[Path, Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "model"
    argv = ["--data", str(corpus), "--output", str(output), *FAST]
    save = ResumeState.save

    def save_then_crash(*args: object) -> None:
        save(*args)  # type: ignore[arg-type]
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(ResumeState, "save", staticmethod(save_then_crash))
        with pytest.raises(Crash):
            run(argv)
    assert state_path(output).is_file() and not output.exists()

    mismatched = run([*argv, "--resume", "--seed", "7"])
    assert mismatched.code == 2 and "different training config" in mismatched.err
    assert state_path(output).is_file()  # kept for the right command

    resumed = run([*argv, "--resume"])
    assert resumed.code == 0, resumed.err
    assert "epoch 1:" not in resumed.out and "epoch 2:" in resumed.out
    assert not state_path(output).exists()
    # Optimizer, schedule, RNGs and history all came back: the result is the uninterrupted run's.
    uninterrupted, again = load_checkpoint(trained[0]), load_checkpoint(output)
    assert [h["epoch"] for h in again.metrics["history"]] == [1, 2]
    for name, tensor in uninterrupted.model.state_dict().items():
        assert torch.allclose(again.model.state_dict()[name], tensor, atol=1e-6), name


def test_every_flag_has_help() -> None:
    parser = build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings


def test_init_from_fine_tunes_a_checkpoint_on_new_data(corpus: Path, tmp_path: Path) -> None:
    base = save_checkpoint(tiny_checkpoint_object(), tmp_path / "base")
    output = tmp_path / "tuned"
    result = run(["--data", str(corpus), "--output", str(output), "--init-from", str(base), *FAST])
    assert result.code == 0, result.err
    tuned, original = load_checkpoint(output), load_checkpoint(base)
    assert tuned.training["init_from"] == str(base)
    assert tuned.config.hidden_size == original.config.hidden_size  # the base's architecture
    vocabulary = original.tokenizer.vocabulary()
    assert tuned.tokenizer.vocabulary()[: len(vocabulary)] == vocabulary
    assert "happy" in tuned.tokenizer.vocabulary()[len(vocabulary) :]  # a word the base lacked


def test_an_existing_checkpoint_is_replaced_only_with_force(corpus: Path, tmp_path: Path) -> None:
    output = save_checkpoint(tiny_checkpoint_object(), tmp_path / "model")
    before = snapshot(output)
    refused = run(["--data", str(corpus), "--output", str(output), *FAST])
    assert refused.code == 2 and "already holds a checkpoint; pass --force" in refused.err
    assert snapshot(output) == before
    forced = run(["--data", str(corpus), "--output", str(output), "--force", *FAST])
    assert forced.code == 0, forced.err
    assert snapshot(output) != before


def test_without_output_a_run_on_your_data_never_writes_the_shipped_model(
    corpus: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shipped = tmp_path / "checkpoints" / "default"
    monkeypatch.setattr(cli, "DEFAULT_CHECKPOINT", shipped)
    assert cli.output_path(build_parser().parse_args([])) == shipped
    assert cli.output_path(build_parser().parse_args(["--data", str(corpus)])) == shipped.parent / "tweets"
    tiny = build_parser().parse_args(["--data", str(corpus), "--tiny"])
    assert cli.output_path(tiny) == shipped.parent / "tweets-tiny"
    assert cli.output_path(build_parser().parse_args(["--tiny"])) == shipped.parent / "tiny"


def test_a_second_run_on_the_same_data_refuses_to_replace_the_first(
    corpus: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shipped = save_checkpoint(tiny_checkpoint_object(), tmp_path / "checkpoints" / "default")
    before = snapshot(shipped)
    monkeypatch.setattr(cli, "DEFAULT_CHECKPOINT", shipped)
    first = run(["--data", str(corpus), *FAST])
    assert first.code == 0, first.err
    assert first.out.rstrip().endswith(f"saved {shipped.parent / 'tweets-tiny'}")
    again = run(["--data", str(corpus), *FAST])
    assert again.code == 2
    assert again.err == (
        f"error: {shipped.parent / 'tweets-tiny'} already holds a checkpoint; "
        "pass --force to replace it, or another --output\n"
    )
    assert snapshot(shipped) == {**before, **{k: v for k, v in snapshot(shipped).items() if "tiny" in k}}
    assert (shipped / "config.json").read_bytes() == before["default/config.json"]


def test_the_data_is_summarised_before_the_first_epoch(corpus: Path, tmp_path: Path) -> None:
    result = run(["--data", str(corpus), "--output", str(tmp_path / "out"), *FAST])
    assert result.code == 0, result.err
    summary = " ".join(result.out[: result.out.index("epoch 1:")].split())
    assert "data: 120 rows, 3 labels (negative 40, neutral 40, positive 40)" in summary
    assert "train 96 rows (negative 32, neutral 32, positive 32)" in summary
    assert "validation 12 rows (negative 4, neutral 4, positive 4)" in summary
    assert "test 12 rows (negative 4, neutral 4, positive 4)" in summary
    assert "warning: the validation split has 12 rows, under 200" in summary


def test_a_small_validation_split_trains_with_warnings_and_no_temperature(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "small.csv", rows=300)  # 30 validation rows: too few to calibrate
    output = tmp_path / "small"
    result = run(["--data", str(data), "--output", str(output), *FAST])
    assert result.code == 0, result.err
    says = "the validation split has 30 rows, under 200: too few to choose the best epoch reliably or to fit"
    assert f"warning: {says}" in result.out
    checkpoint = load_checkpoint(output)
    assert checkpoint.temperature == 1.0
    assert any(w.startswith(says) for w in checkpoint.metrics["warnings"])
    assert json.loads((output / "metrics.json").read_text())["warnings"] == checkpoint.metrics["warnings"]


def test_a_temperature_at_its_bound_is_not_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "fit_temperature", lambda logits, labels: 0.05)
    rows = calibration.MIN_VALIDATION_ROWS
    logits, labels = np.zeros((rows, 2)), np.zeros(rows, dtype=np.int64)
    temperature, warnings = calibration.calibrate(logits, labels)
    assert temperature == 1.0
    assert len(warnings) == 1 and "temperature 0.05 is at its bound" in warnings[0]
    assert calibration.calibrate(logits, labels, enabled=False) == (1.0, [])


def test_a_class_missing_from_the_held_out_splits_is_warned_about(tmp_path: Path) -> None:
    rows = (
        ["text,label"]
        + [f"fine day {i},positive" for i in range(60)]
        + [f"calm day {i},neutral" for i in range(60)]
    )
    data = tmp_path / "lopsided.csv"
    data.write_text("\n".join([*rows, "awful day,negative", "awful night,negative"]) + "\n")
    output = tmp_path / "out"
    result = run(["--data", str(data), "--output", str(output), *FAST])
    assert result.code == 0, result.err
    assert "warning: the validation split has no 'negative' example" in result.out
    assert "warning: the test split has no 'negative' example" in result.out
    assert sum("no 'negative' example" in w for w in load_checkpoint(output).metrics["warnings"]) == 2


@pytest.mark.parametrize("after_epochs", [0, 1])
def test_ctrl_c_prints_one_line_naming_resume_and_exits_130(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after_epochs: int
) -> None:
    output = tmp_path / "model"
    run_epochs = Loop.run

    def interrupt(loop: Loop, on_epoch) -> None:  # type: ignore[no-untyped-def]
        if after_epochs:
            loop.config = replace(loop.config, epochs=after_epochs)
            run_epochs(loop, on_epoch)
            loop.config = replace(loop.config, epochs=2)
        raise KeyboardInterrupt

    monkeypatch.setattr(Loop, "run", interrupt)
    result = run(["--data", str(corpus), "--output", str(output), *FAST])
    assert result.code == 130
    lines = [line for line in result.err.splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.err
    assert "--resume" in lines[0]
    assert ("is saved" in lines[0]) == bool(after_epochs) == state_path(output).is_file()
