"""training/corpus.py stands alone: the Docker image's corpus stage runs it before the project exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import training.corpus


def test_corpus_script_runs_with_only_the_standard_library(tmp_path: Path) -> None:
    script = shutil.copy(training.corpus.__file__, tmp_path / "corpus.py")
    # -I: isolated mode, so neither the project nor site-packages is on the path, as in the image.
    command = [sys.executable, "-I", "-S", script, "--help"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert "Fetch the default corpus" in result.stdout
