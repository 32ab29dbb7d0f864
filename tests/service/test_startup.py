"""What a serving process sets up: its threads and GIL interval, and the Predictor from the settings."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from service.settings import Settings
from service.startup import build_predictor, configure_process


def test_configure_process_sets_threads_and_the_gil_interval(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    threads, interval = torch.get_num_threads(), sys.getswitchinterval()
    try:
        configure_process(settings.model_copy(update={"torch_threads": 1, "gil_switch_ms": 2.0}))
        assert torch.get_num_threads() == 1
        assert sys.getswitchinterval() == pytest.approx(0.002)
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    finally:
        torch.set_num_threads(threads)
        sys.setswitchinterval(interval)


def test_build_predictor_follows_the_settings(settings: Settings) -> None:
    predictor = build_predictor(settings.model_copy(update={"max_batch_size": 3}), settings.checkpoint)
    assert predictor.batch_size == 3 and predictor.device.type == "cpu"
    assert [p.label for p in predictor.predict(["great", "awful"])] == [
        p.label for p in build_predictor(settings, predictor.checkpoint).predict(["great", "awful"])
    ]
