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
from training.config import TrainConfig

if TYPE_CHECKING:
    from training.loop import Loop


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
            "loop": loop.state_dict(),
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
        loop.load_state_dict(self.values["loop"])
