"""The lexicon as the model sees it: one valence per token, in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import torch

from training.lexicon import lexicon_column, read_lexicon


def test_single_token_entries_are_kept_scaled_and_normalised(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text(
        "Good\t1.9\t0.9\t[2, 2]\n:)\t2.0\t0.5\t[2, 2]\nbad\t-2.5\t0.7\t[-2, -3]\n"
        "can't stand\t-2.0\t0.5\t[-2]\nbroken line\n"
    )
    lexicon = read_lexicon(path)
    assert lexicon == {"good": 1.9 / 4, ":)": 0.5, "bad": -2.5 / 4}  # "can't stand" is two tokens


def test_the_column_gives_each_vocabulary_word_its_valence_or_zero() -> None:
    column = lexicon_column(["[PAD]", "[UNK]", "good", "table"], {"good": 0.5})
    assert torch.equal(column, torch.tensor([[0.0], [0.0], [0.5], [0.0]]))
