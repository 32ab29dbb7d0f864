"""A checkpoint is one directory that rebuilds the classifier with nothing else.

    model.safetensors   weights (no pickle: safe to load from anywhere)
    config.json         model config, labels, temperature, training config, provenance
    tokenizer.json      the HF tokenizer, normaliser and pre-tokeniser included
    metrics.json        the final evaluation report
    manifest.json       size and SHA-256 of each file above, to catch truncation and corruption

Writes go to a temporary sibling directory that is renamed into place, so a crash mid-write never
leaves a half-written checkpoint where a loader would find it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.network import SentimentClassifier
from model.tokenizer import TextTokenizer

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
WEIGHTS, CONFIG, TOKENIZER, METRICS, MANIFEST = (
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "metrics.json",
    "manifest.json",
)
FILES = (WEIGHTS, CONFIG, TOKENIZER, METRICS)


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or inconsistent."""


@dataclass
class Checkpoint:
    model: SentimentClassifier
    tokenizer: TextTokenizer
    labels: list[str]
    temperature: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    version: str = ""  # first 12 hex digits of the weights' SHA-256, set on save and load

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks (weights and data files can be large)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_checkpoint(
    checkpoint: Checkpoint,
    path: str | os.PathLike[str],
    extras: Callable[[Path], object] | None = None,
) -> Path:
    """Write ``checkpoint`` to directory ``path`` atomically, replacing any checkpoint there.

    ``extras(directory)`` may add files (plots, say) to the new checkpoint before it is moved into place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        _write_files(checkpoint, staging)
        if extras is not None:
            extras(staging)
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    checkpoint.version = file_sha256(target / WEIGHTS)[:12]
    return target


def _write_files(checkpoint: Checkpoint, directory: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in checkpoint.model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
    checkpoint.tokenizer.save(directory / TOKENIZER)
    _write_json(
        directory / CONFIG,
        {
            "format_version": FORMAT_VERSION,
            "model": checkpoint.config.to_dict(),
            "labels": checkpoint.labels,
            "temperature": checkpoint.temperature,
            "training": checkpoint.training,
            "provenance": checkpoint.provenance,
        },
    )
    _write_json(directory / METRICS, checkpoint.metrics)
    manifest = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
        for name in FILES
    }
    _write_json(directory / MANIFEST, manifest)
    for name in (*FILES, MANIFEST):
        (directory / name).chmod(0o644)  # readable by a service running as another user
        with (directory / name).open("rb") as f:
            os.fsync(f.fileno())


def _swap_into_place(staging: Path, target: Path) -> None:
    # rename() cannot replace a non-empty directory, so move the old one aside first, and put it back
    # if the new one cannot take its place.
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
    if target.exists():
        target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        if retired.exists():
            retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _retired(target: Path) -> list[Path]:
    """Checkpoints moved aside by swaps into ``target``, newest first."""
    found = target.parent.glob(f".{target.name}.old-*")
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)


def recover(target: Path) -> None:
    """Undo what a write killed between its two renames left behind: the old checkpoint moved aside and
    nothing at ``target``. The newest one moved aside goes back; ones left by finished swaps go."""
    retired = _retired(target)
    if retired and not target.exists():
        retired.pop(0).rename(target)
    for leftover in retired:
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Rebuild model, tokenizer and labels from ``path``; raise ``CheckpointError`` saying what is wrong."""
    directory = Path(path)
    if not directory.is_dir():
        retired = _retired(directory)
        if retired:
            raise CheckpointError(
                f"checkpoint directory {directory} does not exist: a write into it was interrupted, and "
                f"{retired[0]} holds the checkpoint it replaced; rename that back, or write again"
            )
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    _verify_manifest(directory)
    meta = _read_json(directory / CONFIG)
    try:
        config = ModelConfig.from_dict(meta["model"])
        labels = [str(label) for label in meta["labels"]]
        temperature = float(meta.get("temperature", 1.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / CONFIG}: invalid model config: {exc}") from exc
    if not math.isfinite(temperature) or temperature <= 0:
        raise CheckpointError(
            f"{directory / CONFIG}: temperature must be a positive number, got {temperature}"
        )
    if len(labels) != config.num_labels:
        raise CheckpointError(
            f"{directory / CONFIG}: {len(labels)} labels but the model has {config.num_labels} outputs"
        )
    tokenizer = _load_tokenizer(directory / TOKENIZER, config)
    model = _load_model(directory / WEIGHTS, config)
    return Checkpoint(
        model=model,
        tokenizer=tokenizer,
        labels=labels,
        temperature=temperature,
        training=meta.get("training", {}),
        metrics=_read_json(directory / METRICS),
        provenance=meta.get("provenance", {}),
        version=file_sha256(directory / WEIGHTS)[:12],
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _verify_manifest(directory: Path) -> None:
    manifest = _read_json(directory / MANIFEST)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{directory / MANIFEST} is not a JSON object")
    for name in FILES:
        file = directory / name
        expected = manifest.get(name)
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        if not isinstance(expected, dict):
            raise CheckpointError(f"{directory / MANIFEST} has no entry for {name}")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise CheckpointError(
                f"{file} is truncated or altered: {size} bytes, manifest says {expected.get('bytes')}"
            )
        if file_sha256(file) != expected.get("sha256"):
            raise CheckpointError(f"{file} is corrupt: its SHA-256 does not match the manifest")


def _load_tokenizer(path: Path, config: ModelConfig) -> TextTokenizer:
    try:
        tokenizer = TextTokenizer.from_file(path, config.max_length)
    except Exception as exc:  # tokenizers raises bare Exception on a bad file
        raise CheckpointError(f"{path} is not a valid tokenizer: {exc}") from exc
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path} has {tokenizer.vocab_size} tokens but the model config expects {config.vocab_size}"
        )
    return tokenizer


def _load_model(path: Path, config: ModelConfig) -> SentimentClassifier:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc
    broken = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise CheckpointError(f"{path}: {', '.join(broken)} hold NaN or infinite values")
    model = SentimentClassifier(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        # torch lists every mismatch on lines of its own: one line is enough to say what is wrong.
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())
        raise CheckpointError(f"{path} does not match the model config: {detail[:300]}") from exc
    return model.eval()
