"""training/corpus.py stands alone: the Docker image's corpus stage runs it before the project exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import training.corpus


def test_corpus_script_runs_with_only_the_standard_library(tmp_path: Path) -> None:
    script = shutil.copy(training.corpus.__file__, tmp_path / "corpus.py")
    # -I: isolated mode, so neither the project nor site-packages is on the path, as in the image.
    command = [sys.executable, "-I", "-S", script, "--help"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert "Fetch the default corpus" in result.stdout


def test_a_member_inside_an_archive_inside_the_package_is_read(tmp_path: Path) -> None:
    inner = tmp_path / "inner.tar.gz"
    payload = tmp_path / "ratings.txt"
    payload.write_bytes(b"1\t2.0\tgood\n")
    with tarfile.open(inner, "w:gz") as archive:
        archive.add(payload, arcname="sets/ratings.txt")
    outer = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(outer, "w:gz") as archive:
        archive.add(inner, arcname="pkg-1.0/inner.tar.gz")
        archive.add(payload, arcname="pkg-1.0/top.txt")
    assert training.corpus.read_member(outer, "pkg-1.0/inner.tar.gz!sets/ratings.txt") == b"1\t2.0\tgood\n"
    assert training.corpus.read_member(outer, "pkg-1.0/top.txt") == b"1\t2.0\tgood\n"
