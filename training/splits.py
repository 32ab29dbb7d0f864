"""Train, validation and test splits of a run: stratified from one file, or given as their own files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from training.config import TrainConfig
from training.data import DataError, Dataset, label_names, stratified_split


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    labels: list[str] = field(default_factory=list)
    unused: int = 0  # training rows left out by max_examples

    def named(self) -> dict[str, Dataset]:
        return {"train": self.train, "validation": self.val, "test": self.test}

    def fingerprint(self) -> str:
        """SHA-256 of every split's texts and labels: a resumed run must see the same data."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            for text, label in zip(split.texts, split.labels, strict=True):
                digest.update(f"{label}\t{text}\n".encode())
            digest.update(b"\0")
        return digest.hexdigest()


def make_splits(
    data: Dataset, config: TrainConfig, val: Dataset | None = None, test: Dataset | None = None
) -> Splits:
    """Held-out splits from ``data`` (stratified, seeded) unless given as their own files."""
    fractions = [
        f for f, given in ((config.val_fraction, val), (config.test_fraction, test)) if given is None
    ]
    parts = stratified_split(
        data.labels, [1 - sum(fractions), *fractions], config.seed, data.groups, data.domains
    )
    train, rest = data.subset(parts[0]), [data.subset(p) for p in parts[1:]]
    val = val if val is not None else rest.pop(0)
    test = test if test is not None else rest.pop(0)
    unused = 0
    if config.max_examples is not None and len(train) > config.max_examples:
        unused = len(train) - config.max_examples
        train = train.subset(range(config.max_examples))
    labels = label_names(train.labels, train.source)
    for name, split in (("validation", val), ("test", test)):
        unseen = set(split.labels) - set(labels)
        if unseen:
            raise DataError(f"{split.source}: {name} labels {sorted(unseen)} never occur in training data")
        if len(split) == 0:
            raise DataError(f"{data.source}: too few rows for a {name} split")
    return Splits(train, val, test, labels, unused)
