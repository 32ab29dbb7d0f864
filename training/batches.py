"""Token ids held flat in memory, served as length-bucketed, padded batches with no Python loops."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.tokenizer import PAD_ID, UNK_ID, TextTokenizer

ENCODE_CHUNK = 4096


@dataclass
class EncodedSplit:
    """A split tokenised once: the ids of all texts end to end, with offsets and lengths."""

    flat: np.ndarray  # (total tokens,) int64
    offsets: np.ndarray  # (N,) start of each text in ``flat``
    lengths: np.ndarray  # (N,) >= 1
    labels: np.ndarray  # (N,) int64 label index
    domains: np.ndarray | None = None  # (N,) int64 domain index, when the data has domains

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def encode_split(
    tokenizer: TextTokenizer, texts: Sequence[str], labels: np.ndarray, domains: np.ndarray | None = None
) -> EncodedSplit:
    pieces, lengths = [], []
    for start in range(0, len(texts), ENCODE_CHUNK):
        batch = tokenizer.encode(texts[start : start + ENCODE_CHUNK])
        mask = torch.arange(batch.ids.shape[1])[None, :] < batch.lengths[:, None]
        pieces.append(batch.ids[mask].numpy())  # drops the padding, keeps order
        lengths.append(batch.lengths.numpy())
    length_array = np.concatenate(lengths)
    offsets = np.concatenate([[0], np.cumsum(length_array)[:-1]])
    return EncodedSplit(
        np.concatenate(pieces),
        offsets,
        length_array,
        np.asarray(labels, np.int64),
        None if domains is None else np.asarray(domains, np.int64),
    )


def bucketed_batches(
    split: EncodedSplit, batch_size: int, rng: np.random.Generator | None, bucket_batches: int = 50
) -> Iterator[np.ndarray]:
    """Row indices per batch. Rows are shuffled, then sorted by length within buckets of
    ``bucket_batches`` batches, so each batch holds similar lengths; batch order is shuffled too.
    With ``rng=None`` the order is deterministic (sorted by length), for evaluation."""
    if rng is None:
        order = np.argsort(split.lengths, kind="stable")
        yield from np.array_split(order, max(1, -(-len(order) // batch_size)))
        return
    order = rng.permutation(len(split))
    bucket = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), bucket):
        rows = order[start : start + bucket]
        rows = rows[np.argsort(split.lengths[rows], kind="stable")]
        batches.extend(rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
    for k in rng.permutation(len(batches)):
        yield batches[k]


def collate(
    split: EncodedSplit,
    rows: np.ndarray,
    word_dropout: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids (B, T) right-padded, lengths (B,), labels (B,); optionally words replaced by [UNK]."""
    lengths = split.lengths[rows]
    steps = np.arange(lengths.max())
    mask = steps[None, :] < lengths[:, None]  # (B, T)
    index = np.minimum(split.offsets[rows][:, None] + steps[None, :], len(split.flat) - 1)
    ids = np.where(mask, split.flat[index], PAD_ID)
    if word_dropout > 0 and rng is not None:
        # Word dropout: the model cannot lean on any single word, and learns to use [UNK].
        ids = np.where(mask & (rng.random(ids.shape) < word_dropout), UNK_ID, ids)
    return torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(split.labels[rows])
