"""Checkpoint directories: round trip, clear errors on every kind of damage, atomic writes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model.checkpoint as checkpoint_module
from model.checkpoint import (
    CONFIG,
    FILES,
    MANIFEST,
    METRICS,
    TOKENIZER,
    WEIGHTS,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from model.network import SentimentClassifier
from tests.conftest import CORPUS, tiny_checkpoint_object


@pytest.fixture
def damaged(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint, free to corrupt."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "copy"))


def refresh_manifest(directory: Path, name: str) -> None:
    """Make the manifest agree with ``name`` again, so the loader's deeper checks are reached."""
    manifest = json.loads((directory / MANIFEST).read_text())
    data = (directory / name).read_bytes()
    manifest[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def edit_config(directory: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((directory / CONFIG).read_text())
    change(meta)
    (directory / CONFIG).write_text(json.dumps(meta))
    refresh_manifest(directory, CONFIG)


def logits(checkpoint: checkpoint_module.Checkpoint) -> torch.Tensor:
    batch = checkpoint.tokenizer.encode([*CORPUS, "something unseen", ""])
    with torch.no_grad():
        return checkpoint.model(batch.ids, batch.lengths)


def test_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    original = tiny_checkpoint_object(seed=3)
    original.temperature = 1.7
    path = save_checkpoint(original, tmp_path / "ckpt")
    loaded = load_checkpoint(path)
    assert torch.equal(logits(loaded), logits(original))
    assert loaded.config == original.config
    assert loaded.tokenizer.vocabulary() == original.tokenizer.vocabulary()
    assert loaded.labels == original.labels
    assert loaded.temperature == 1.7
    assert loaded.metrics == original.metrics
    assert loaded.provenance == original.provenance
    assert loaded.training == original.training
    assert not loaded.model.training


def test_version_is_the_weights_hash(tmp_path: Path) -> None:
    original = tiny_checkpoint_object()
    path = save_checkpoint(original, tmp_path / "ckpt")
    digest = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    assert original.version == load_checkpoint(path).version == digest[:12]
    other = tiny_checkpoint_object(seed=1)
    save_checkpoint(other, tmp_path / "other")
    assert other.version != original.version


def test_directory_holds_the_documented_files(tiny_checkpoint: Path) -> None:
    assert sorted(p.name for p in tiny_checkpoint.iterdir()) == sorted([*FILES, MANIFEST])
    meta = json.loads((tiny_checkpoint / CONFIG).read_text())
    assert {"format_version", "model", "labels", "temperature", "training", "provenance"} <= set(meta)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint directory .*nowhere does not exist"):
        load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("name", [*FILES, MANIFEST])
def test_each_missing_file_is_named(damaged: Path, name: str) -> None:
    (damaged / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} is missing"):
        load_checkpoint(damaged)


def test_truncated_weights(damaged: Path) -> None:
    data = (damaged / WEIGHTS).read_bytes()
    (damaged / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{WEIGHTS} is truncated or altered: {len(data) // 2} bytes"):
        load_checkpoint(damaged)


def test_truncated_weights_with_a_matching_manifest(damaged: Path) -> None:
    data = (damaged / WEIGHTS).read_bytes()
    (damaged / WEIGHTS).write_bytes(data[:100])
    refresh_manifest(damaged, WEIGHTS)
    with pytest.raises(CheckpointError, match=f"{WEIGHTS} is not a valid safetensors file"):
        load_checkpoint(damaged)


@pytest.mark.parametrize("name", FILES)
def test_corrupted_bytes_of_the_same_size(damaged: Path, name: str) -> None:
    data = bytearray((damaged / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name} is corrupt: its SHA-256 does not match"):
        load_checkpoint(damaged)


def test_manifest_without_an_entry(damaged: Path) -> None:
    manifest = json.loads((damaged / MANIFEST).read_text())
    del manifest[METRICS]
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"has no entry for {METRICS}"):
        load_checkpoint(damaged)


def test_labels_count_must_match_num_labels(damaged: Path) -> None:
    edit_config(damaged, lambda meta: meta["labels"].pop())
    with pytest.raises(CheckpointError, match="2 labels but the model has 3 outputs"):
        load_checkpoint(damaged)


def test_vocab_size_must_match_the_tokenizer(damaged: Path) -> None:
    size = json.loads((damaged / CONFIG).read_text())["model"]["vocab_size"]
    edit_config(damaged, lambda meta: meta["model"].update(vocab_size=size + 1))
    with pytest.raises(
        CheckpointError, match=f"{TOKENIZER} has {size} tokens but the model config expects {size + 1}"
    ):
        load_checkpoint(damaged)


def test_weights_must_match_the_model_config(damaged: Path) -> None:
    edit_config(damaged, lambda meta: meta["model"].update(hidden_size=7))
    with pytest.raises(CheckpointError, match=f"{WEIGHTS} does not match the model config"):
        load_checkpoint(damaged)


@pytest.mark.parametrize(
    "change",
    [
        lambda meta: meta["model"].update(colour="red"),
        lambda meta: meta.pop("model"),
        lambda meta: meta["model"].update(pooling="sum"),
    ],
    ids=["unknown-key", "no-model", "bad-value"],
)
def test_invalid_model_config(damaged: Path, change: Callable[[dict], None]) -> None:
    edit_config(damaged, change)
    with pytest.raises(CheckpointError, match=f"{CONFIG}: invalid model config"):
        load_checkpoint(damaged)


@pytest.mark.parametrize("name", [CONFIG, METRICS])
def test_invalid_json(damaged: Path, name: str) -> None:
    (damaged / name).write_text('{"labels": [')
    refresh_manifest(damaged, name)
    with pytest.raises(CheckpointError, match=f"{name} is not valid JSON"):
        load_checkpoint(damaged)


def test_manifest_that_is_not_an_object(damaged: Path) -> None:
    (damaged / MANIFEST).write_text("[]")
    with pytest.raises(CheckpointError, match=f"{MANIFEST} is not a JSON object"):
        load_checkpoint(damaged)


def test_invalid_manifest_json(damaged: Path) -> None:
    (damaged / MANIFEST).write_bytes(b"\xff\xfe not json")
    with pytest.raises(CheckpointError, match=f"{MANIFEST} is not valid JSON"):
        load_checkpoint(damaged)


def test_invalid_tokenizer(damaged: Path) -> None:
    (damaged / TOKENIZER).write_text('{"model": "nonsense"}')
    refresh_manifest(damaged, TOKENIZER)
    with pytest.raises(CheckpointError, match=f"{TOKENIZER} is not a valid tokenizer"):
        load_checkpoint(damaged)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_saving_over_a_checkpoint_replaces_it_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(tiny_checkpoint_object(seed=0), path)
    newer = tiny_checkpoint_object(seed=1)
    save_checkpoint(newer, path)
    assert load_checkpoint(path).version == newer.version
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["_write_json", "save_file"])
def test_a_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "ckpt"
    previous = tiny_checkpoint_object(seed=0)
    save_checkpoint(previous, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, failing, crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_checkpoint_object(seed=1), path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert load_checkpoint(path).version == previous.version
    assert leftovers(tmp_path) == []


def test_a_failed_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.TextTokenizer, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tiny_checkpoint_object(), tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_a_lexicon_model_round_trips_with_its_valences(tmp_path: Path) -> None:
    original = tiny_checkpoint_object(seed=4)
    config = dataclasses.replace(original.config, lexicon=True)
    original.model = SentimentClassifier(config).eval()
    original.model.lexicon.uniform_(-1, 1)
    loaded = load_checkpoint(save_checkpoint(original, tmp_path / "ckpt"))
    assert loaded.config.lexicon
    assert torch.equal(loaded.model.lexicon, original.model.lexicon)
    assert torch.equal(logits(loaded), logits(original))


def test_an_ngram_model_round_trips_with_its_weights(tmp_path: Path) -> None:
    original = tiny_checkpoint_object(seed=4)
    config = dataclasses.replace(original.config, ngram_buckets=64)
    original.model = SentimentClassifier(config).eval()
    torch.nn.init.uniform_(original.model.ngrams, -1, 1)
    loaded = load_checkpoint(save_checkpoint(original, tmp_path / "ckpt"))
    assert loaded.config.ngram_buckets == 64
    assert torch.equal(loaded.model.ngrams, original.model.ngrams)
    assert torch.equal(logits(loaded), logits(original))


def test_nan_weights_with_a_matching_manifest_are_refused(damaged: Path) -> None:
    state = load_file(str(damaged / WEIGHTS))
    state["head.bias"] = torch.full_like(state["head.bias"], float("nan"))
    save_file(state, str(damaged / WEIGHTS))
    refresh_manifest(damaged, WEIGHTS)
    with pytest.raises(CheckpointError, match=r"head\.bias hold NaN or infinite values"):
        load_checkpoint(damaged)


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_a_temperature_that_is_not_positive_is_refused(damaged: Path, value: float) -> None:
    edit_config(damaged, lambda meta: meta.update(temperature=value))
    with pytest.raises(CheckpointError, match="temperature must be a positive number"):
        load_checkpoint(damaged)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("hidden_size", "128", "hidden_size must be an integer"), ("bidirectional", 1, "must be true or false")],
)
def test_a_config_value_of_the_wrong_type_is_one_clear_error(
    damaged: Path, key: str, value: object, says: str
) -> None:
    edit_config(damaged, lambda meta: meta["model"].update({key: value}))
    with pytest.raises(CheckpointError, match=says):
        load_checkpoint(damaged)


def test_a_shape_mismatch_is_one_line(damaged: Path) -> None:
    edit_config(damaged, lambda meta: meta["model"].update(hidden_size=7))
    with pytest.raises(CheckpointError, match="does not match the model config: size mismatch") as error:
        load_checkpoint(damaged)
    assert "\n" not in str(error.value)


def test_a_write_killed_between_its_renames_is_recovered_by_the_next(tmp_path: Path) -> None:
    target = save_checkpoint(tiny_checkpoint_object(seed=1), tmp_path / "model")
    moved_aside = tmp_path / ".model.old-0123"
    target.rename(moved_aside)  # where the kill left things: nothing at the target
    with pytest.raises(CheckpointError, match=r"a write into it was interrupted, and .*\.model\.old-0123"):
        load_checkpoint(target)
    save_checkpoint(tiny_checkpoint_object(seed=2), target)
    assert load_checkpoint(target).provenance == {"seed": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recover_puts_the_moved_aside_checkpoint_back(tmp_path: Path) -> None:
    target = save_checkpoint(tiny_checkpoint_object(seed=1), tmp_path / "model")
    target.rename(tmp_path / ".model.old-0123")
    checkpoint_module.recover(target)
    assert load_checkpoint(target).provenance == {"seed": 1}
