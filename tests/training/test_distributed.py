"""Data-parallel training under torchrun: 2 CPU processes (gloo) against a single-process run.

Both train the same small model on the same synthetic corpus through the real CLI; the 2-process
checkpoint (written by rank 0 alone) must load, predict, and score like the single-process one.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.predictor import Predictor
from training import cli

pytestmark = pytest.mark.slow

POSITIVE = ["good", "great", "love", "excellent", "wonderful", "happy", "nice", "best"]
NEGATIVE = ["bad", "awful", "hate", "terrible", "worst", "sad", "poor", "boring"]
FILLER = ["the", "movie", "was", "it", "this", "film", "plot", "actors", "really", "very", "and", "a"]
FLAGS = [
    "--no-glove", "--embedding-dim", "16", "--hidden-size", "16", "--epochs", "3", "--patience", "3",
    "--batch-size", "32", "--lr", "0.02", "--dropout", "0", "--embedding-dropout", "0", "--word-dropout", "0",
    "--vocab-size", "200", "--min-frequency", "1", "--seed", "3", "--no-progress", "--no-calibrate",
]  # fmt: skip


def write_corpus(path: Path, rows: int = 480, seed: int = 0) -> Path:
    """Filler words around one or two sentiment words: learnable in a few epochs, not trivially."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for k in range(rows):
            label, pool = ("positive", POSITIVE) if k % 2 else ("negative", NEGATIVE)
            words = list(rng.choice(FILLER, rng.integers(4, 12))) + list(rng.choice(pool, rng.integers(1, 3)))
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])
    return path


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.csv")
    single, parallel = tmp_path / "single", tmp_path / "ddp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each worker: tiny models only lose from more threads
    try:
        assert cli.main(["--data", str(data), "--output", str(single), "--device", "cpu", *FLAGS]) == 0
    finally:
        torch.set_num_threads(threads)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command = [*launch, "-m", "training", "--data", str(data), "--output", str(parallel), "--device", "cpu"]
    done = subprocess.run([*command, *FLAGS], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test split") == 1, "only rank 0 prints the report"

    one, two = load_checkpoint(single), load_checkpoint(parallel)
    # Only rank 0 wrote: one checkpoint, no leftover staging directories or resume state.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.csv", "ddp", "single"]
    assert two.metrics["examples"] == one.metrics["examples"]
    f1_single, f1_ddp = one.metrics["test"]["macro_f1"], two.metrics["test"]["macro_f1"]
    print(f"test macro-F1: single process {f1_single:.4f}, 2-process DDP {f1_ddp:.4f}")
    assert f1_ddp > 0.85, two.metrics["history"]
    assert abs(f1_ddp - f1_single) < 0.1, (f1_single, f1_ddp)

    predictions = Predictor(two, device="cpu").predict(["i love this great movie", "awful and boring film"])
    assert [p.label for p in predictions] == ["positive", "negative"]
