"""Shared fixtures: a tiny, seeded checkpoint that every layer of the stack can load in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model import Checkpoint, ModelConfig, Predictor, SentimentClassifier, TextTokenizer, save_checkpoint
from service.settings import Settings

CORPUS = [
    "i love this , it is wonderful",
    "great movie , really great acting",
    "this is the worst , i hate it",
    "terrible service and awful food",
    "the meeting is at noon today",
    "the report was published on monday",
]
LABELS = ["negative", "neutral", "positive"]


def tiny_checkpoint_object(seed: int = 0) -> Checkpoint:
    """A 3-label model with random (seeded) weights over a 30-word vocabulary."""
    torch.manual_seed(seed)
    tokenizer = TextTokenizer.train(CORPUS, max_length=16, min_frequency=1)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        num_labels=len(LABELS),
        embedding_dim=8,
        hidden_size=6,
        max_length=16,
        dropout=0.0,
        embedding_dropout=0.0,
    )
    return Checkpoint(
        model=SentimentClassifier(config).eval(),
        tokenizer=tokenizer,
        labels=list(LABELS),
        metrics={"test": {"accuracy": 0.5}},
        provenance={"seed": seed},
        training={"epochs": 0},
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a saved tiny checkpoint (read-only: copy it before corrupting it)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(tiny_checkpoint_object(), path)
    return path


@pytest.fixture(scope="session")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=4)


@pytest.fixture
def settings(tiny_checkpoint: Path) -> Settings:
    """Service settings for the tiny checkpoint, isolated from the environment and any .env file.

    Eager PyTorch: compiling TorchScript takes ~0.2 s per model, and these tests start ~100 apps.
    tests/model checks that the scripted model answers as the eager one, and
    tests/service/test_app.py serves both. The model in the server process: a model process takes
    ~2 s to start; tests/service/test_model_process.py and test_app.py serve through one.
    """
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        checkpoint=tiny_checkpoint,
        model_name="tiny",
        device="cpu",
        torch_threads=1,
        torchscript=False,
        model_process=False,
    )


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny models gain nothing from more, and the test machines are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
