"""Per-epoch training state beside the output, so ``--resume`` continues an interrupted run.

Saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``: tensors and plain
Python values only, nothing that unpickling could execute.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from model.tokenizer import TextTokenizer

if TYPE_CHECKING:
    from training.loop import Loop
    from training.train import TrainConfig


def state_path(output: Path) -> Path:
    return output.parent / f".{output.name}.resume.pt"


@dataclass
class ResumeState:
    values: dict[str, Any]

    @property
    def tokenizer_json(self) -> str:
        return str(self.values["tokenizer"])

    @classmethod
    def load(cls, output: Path, config: TrainConfig, fingerprint: str) -> ResumeState | None:
        path = state_path(output)
        if not path.is_file():
            return None
        values = torch.load(path, map_location="cpu", weights_only=True)
        if values.get("config") != asdict(config):
            raise ValueError(
                f"{path} was saved with a different training config; "
                "rerun with the same options, or without --resume to start over"
            )
        if values.get("data") != fingerprint:
            raise ValueError(
                f"{path} was saved while training on different data; "
                "rerun with the same files, or without --resume to start over"
            )
        return cls(values)

    @staticmethod
    def save(output: Path, loop: Loop, tokenizer: TextTokenizer, fingerprint: str) -> None:
        values = {
            "data": fingerprint,
            "config": asdict(loop.config),
            "tokenizer": tokenizer.to_json(),
            "model": loop.model.state_dict(),
            "best_state": loop.best_state,
            "ema": loop.ema.state_dict() if loop.ema is not None else None,
            "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict(),
            "rng": loop.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": loop.history,
            "epoch": loop.epoch,
            "best_epoch": loop.best_epoch,
            "best_f1": loop.best_f1,
            "bad_epochs": loop.bad_epochs,
            "seconds": loop.seconds,
            "tokens": loop.tokens,
        }
        path = state_path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(values, partial)
        os.replace(partial, path)

    @staticmethod
    def discard(output: Path) -> None:
        state_path(output).unlink(missing_ok=True)

    def restore(self, loop: Loop) -> None:
        v = self.values
        loop.model.load_state_dict(v["model"])
        loop.optimizer.load_state_dict(v["optimizer"])
        if loop.ema is not None:
            loop.ema.load_state_dict(v["ema"])
        loop.scheduler.load_state_dict(v["scheduler"])
        loop.rng.bit_generator.state = v["rng"]
        torch.set_rng_state(v["torch_rng"])
        loop.best_state = v["best_state"]
        loop.history = list(v["history"])
        loop.epoch, loop.best_epoch, loop.best_f1 = v["epoch"], v["best_epoch"], v["best_f1"]
        loop.bad_epochs, loop.seconds, loop.tokens = v["bad_epochs"], v["seconds"], v["tokens"]
