"""Texts in, labels and probabilities out: the model's contract, usable without HTTP."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import Checkpoint, load_checkpoint
from model.explain import Explanation, explain


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is taken as given."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # probability of ``label``
    probabilities: dict[str, float]
    truncated: bool = False  # the text was longer than the model's max_length


class Predictor:
    """Batched inference over a loaded checkpoint, in ``torch.inference_mode``."""

    def __init__(self, checkpoint: Checkpoint, device: str | None = None, batch_size: int = 64) -> None:
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.labels = checkpoint.labels
        self.model = checkpoint.model.to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str | None = None, batch_size: int = 64
    ) -> Predictor:
        return cls(load_checkpoint(path), device=device, batch_size=batch_size)

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Probabilities (N, L) in input order, and whether each text was truncated."""
        probabilities = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        truncated = [False] * len(texts)
        # Similar lengths run together, so short texts do not pay for long ones' padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch_probs, batch_truncated = self._forward([texts[i] for i in rows])
            probabilities[rows] = batch_probs
            for row, flag in zip(rows, batch_truncated, strict=True):
                truncated[row] = flag
        return probabilities, truncated

    @torch.inference_mode()
    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        batch = self.checkpoint.tokenizer.encode(texts)
        ids = batch.ids.to(self.device, non_blocking=True)
        logits = self.model(ids, batch.lengths)
        probs = torch.softmax(logits.float() / self.checkpoint.temperature, dim=-1)
        return probs.cpu().numpy(), batch.truncated

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probabilities, truncated = self.predict_proba(texts)
        best = probabilities.argmax(axis=1)
        return [
            Prediction(
                label=self.labels[k],
                score=float(row[k]),
                probabilities={label: float(p) for label, p in zip(self.labels, row, strict=True)},
                truncated=flag,
            )
            for row, k, flag in zip(probabilities, best, truncated, strict=True)
        ]

    def explain(self, texts: Sequence[str]) -> list[Explanation]:
        """Each text's prediction plus every token's contribution to it (see ``model.explain``)."""
        return explain(self, texts)
