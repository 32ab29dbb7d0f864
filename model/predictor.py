"""Texts in, labels and probabilities out: the model's contract, usable without HTTP."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch

from model.checkpoint import Checkpoint, load_checkpoint

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
log = logging.getLogger(__name__)


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is taken as given."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def default_threads(workers: int = 1) -> int:
    """Intra-op threads per process: the cores left after one for the event loop, shared by workers.

    The service runs HTTP (parsing, JSON, the event loop) on one core while the model runs; on a
    2-core machine one torch thread beats two (docs/serving-performance.md). The LSTM's per-step
    matrix products are small (batch x 4H), so more than 4 threads buys little.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, (cores - 1) // max(1, workers)))


def configure_threads(threads: int | None = None, workers: int = 1) -> int:
    """Set torch's intra-op threads (``threads`` or ``default_threads``) and one inter-op thread."""
    threads = threads or default_threads(workers)
    torch.set_num_threads(threads)
    # One forward at a time: nothing to run side by side. Raises once set or once inter-op work
    # has started; then keep what is there.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return threads


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float  # probability of ``label``
    probabilities: dict[str, float]
    truncated: bool = False  # the text was longer than the model's max_length


def to_predictions(
    labels: Sequence[str], probabilities: np.ndarray, truncated: Sequence[bool]
) -> list[Prediction]:
    """Probabilities (N, L) and truncation flags as ``Prediction`` objects."""
    best = probabilities.argmax(axis=1).tolist()
    return [  # plain floats from one .tolist(): cheaper than float() on each numpy scalar
        Prediction(
            label=labels[k],
            score=row[k],
            probabilities=dict(zip(labels, row, strict=True)),
            truncated=flag,
        )
        for row, k, flag in zip(probabilities.tolist(), best, truncated, strict=True)
    ]


# A text is ``mixed`` when at least two opposing labels (any but neutral) each hold this share of its
# length, counted over its sentences' labels (docs/quality.md, "Sentences").
MIXED_SHARE = 0.2


def aggregate(probabilities: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """One text's probabilities (L,) from its parts' (P, L): their mean weighted by ``weights``
    (the parts' lengths in characters)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
    return (w @ probabilities.astype(np.float64)).astype(np.float32)  # type: ignore[no-any-return]


def is_mixed(
    labels: Sequence[str], probabilities: np.ndarray, weights: Sequence[float], share: float = MIXED_SHARE
) -> bool:
    """Whether two different non-neutral labels each win parts holding ``share`` of the weight."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) < 2 or w.sum() <= 0:
        return False
    held = np.bincount(probabilities.argmax(axis=1), weights=w / w.sum(), minlength=len(labels))
    return sum(1 for k, name in enumerate(labels) if name != "neutral" and held[k] >= share) >= 2


class Predictor:
    """Batched inference over a loaded checkpoint, in ``torch.inference_mode``.

    ``torchscript`` (default on) runs the network as one TorchScript call; see ``script``.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str | None = None,
        batch_size: int = 64,
        quantize: bool = False,
        torchscript: bool = True,
    ) -> None:
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.labels = checkpoint.labels
        self.model: torch.nn.Module = checkpoint.model.to(self.device).eval()
        self.quantized = quantize and self.device.type == "cpu"
        if self.quantized:
            self.model = quantize_int8(self.model)
        # Logits to calibrated probabilities in the same call: each torch op called from Python is one
        # more wait for the GIL while the event loop holds it (see ``script``).
        self._probabilities: torch.nn.Module = Probabilities(self.model, checkpoint.temperature)
        self.scripted = False
        if torchscript:
            self._probabilities, self.scripted = script(self._probabilities)
            # The scripted classifier (logits), for explain.
            self.model = cast(torch.nn.Module, self._probabilities.model)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | None = None,
        batch_size: int = 64,
        quantize: bool = False,
        torchscript: bool = True,
    ) -> Predictor:
        checkpoint = load_checkpoint(path)
        return cls(checkpoint, device, batch_size, quantize=quantize, torchscript=torchscript)

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

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        batch = self.checkpoint.tokenizer.encode(texts)
        return self.probabilities(batch.ids, batch.lengths), batch.truncated

    @torch.inference_mode()
    def probabilities(self, ids: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        """Probabilities (B, L) of token ids (B, T), right-padded, with their lengths (B,), in one pass."""
        if self.device.type == "cpu":  # one call into torch
            return self._probabilities(ids, lengths).numpy()
        # Page-locked memory lets the copy to the GPU run asynchronously.
        ids = ids.pin_memory().to(self.device, non_blocking=True)
        return self._probabilities(ids, lengths).cpu().numpy()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predictions(*self.predict_proba(texts))

    def predictions(self, probabilities: np.ndarray, truncated: Sequence[bool]) -> list[Prediction]:
        """``predict_proba``'s arrays as ``Prediction`` objects."""
        return to_predictions(self.labels, probabilities, truncated)


class Probabilities(torch.nn.Module):
    """A classifier's logits (B, L) as probabilities, softened by its calibration temperature."""

    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(ids, lengths).float() / self.temperature, dim=-1)


def quantize_int8(model: ModuleT) -> ModuleT:
    """int8 dynamic quantisation of the LSTM and linear layers (CPU only; see README for accuracy)."""
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8
        )
    return cast(ModuleT, quantized)  # a copy of the same class, its LSTM and Linear swapped


def script(model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """``model`` compiled by TorchScript for inference, or ``model`` itself if it cannot be; and which.

    Most torch operations called from Python release the GIL while they run and take it back after,
    so in eager mode the ~30 operations of a forward pass each wait for a busy event loop to hand the
    GIL back (up to a switch interval each). A TorchScript call takes it back once, at its end
    (docs/serving-performance.md). TorchScript is deprecated in favour of ``torch.compile`` and
    ``torch.export``, which need a C++ compiler at run time or an ahead-of-time build; should a
    future torch drop it, the predictor falls back to eager mode with a warning.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(model), True
    except Exception as exc:  # an unsupported torch or module: eager mode still gives the same answers
        log.warning("TorchScript unavailable (%r); running the model in eager mode", exc)
        return model, False
