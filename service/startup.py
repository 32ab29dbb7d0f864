"""What a process that serves the model sets up first, the server and its model process alike."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from model.checkpoint import Checkpoint, load_checkpoint
from model.predictor import Predictor, configure_threads
from service.observability import configure_logging
from service.settings import Settings


def configure_process(settings: Settings) -> None:
    """Threads, GIL switch interval and logging, from the settings."""
    # One batch is tokenised at a time: tokenizers' own thread pool only waits for busy cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    configure_threads(settings.torch_threads, settings.workers)
    # A Python stretch in one thread holds another back at most this long (Python's default: 5 ms).
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    if not logging.getLogger().handlers:  # not yet set up (by ``python -m service``, or by a test)
        configure_logging(settings.log_level, settings.log_format)


def build_predictor(settings: Settings, checkpoint: Path | Checkpoint) -> Predictor:
    loaded = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    return Predictor(
        loaded,
        device=settings.device,
        batch_size=settings.max_batch_size,
        quantize=settings.quantize,
        torchscript=settings.torchscript,
    )
