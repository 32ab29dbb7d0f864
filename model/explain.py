"""Which words pushed the prediction, and how hard: batched leave-one-word-out occlusion.

For a text of T tokens the model runs once on T + 1 rows: the text itself and the text with each token
removed in turn. A token's contribution is how much the log-odds of the predicted label drop when it is
removed: positive means the word supports the predicted label, negative means it argues against it.

Why occlusion and not integrated gradients: the tokenizer is word-level, so deleting a token is exactly
"the same text without this word", a question the model answers itself, with no baseline to choose (a
zero embedding is not "no word" to an LSTM: it is a step that still moves the state) and no path
integral to approximate through max pooling. It is forward-only, so it runs in ``inference_mode`` in
one batched pass of T + 1 short rows, where integrated gradients needs ~20-50 interpolation steps, each
a forward *and* a backward pass through the LSTM: several times slower on CPU for tweet-length text.
Its blind spot is redundancy: of two words that each suffice, removing either one changes little.
Log-odds, not probabilities, because a probability near 1 hardly moves when one word goes, while its
log-odds still do.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Encoding

from model.predictor import Predictor
from model.tokenizer import PAD_ID

METHOD = "leave-one-word-out occlusion, log-odds of the predicted label"
# The normaliser replaces URLs and @mentions by one placeholder each, and the tokenizer's offsets for
# a placeholder point at the match's last character only, so the whole match is found again here.
_PLACEHOLDER = re.compile(r"https?://\S+|www\.\S+|@\w+", re.IGNORECASE)
# One forward pass runs at most this many token steps (rows x padded length): ~0.15 s for the shipped
# model on one CPU thread, so a stop request waits at most that long for the pass in progress.
PASS_STEPS = 32_768
_throughputs: weakref.WeakKeyDictionary[Predictor, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TokenContribution:
    token: str  # the token as the model saw it (normalised, or [UNK])
    start: int  # character span of the token in the original text: text[start:end]
    end: int
    contribution: float  # drop in the predicted label's log-odds when the token is removed


@dataclass(frozen=True)
class Explanation:
    label: str
    score: float
    probabilities: dict[str, float]
    tokens: list[TokenContribution]
    truncated: bool = False  # tokens past max_length were not seen, so they are not listed


@dataclass
class _Encoded:
    ids: list[int]
    tokens: list[str]
    spans: list[tuple[int, int]]
    truncated: bool


class Stopped(Exception):
    """``explain`` was told to stop (its caller's deadline passed) before it finished."""


@dataclass
class Plan:
    """Texts encoded and packed into forward passes: what an explanation will cost, before it runs."""

    encoded: list[_Encoded]
    passes: list[list[int]]  # indices into ``encoded``, one list per forward pass

    @property
    def rows(self) -> int:
        """Model rows in all: T + 1 for a text of T tokens."""
        return sum(len(e.ids) + 1 for e in self.encoded)

    @property
    def steps(self) -> int:
        """Token steps the LSTM runs (each pass: its rows x its longest row), the measure of its time."""
        return sum(_pass_steps([self.encoded[i] for i in group]) for group in self.passes)


def plan(predictor: Predictor, texts: Sequence[str], max_steps: int = PASS_STEPS) -> Plan:
    """``texts`` tokenised and packed into passes of at most ``max_steps`` token steps (a text that
    needs more runs alone)."""
    tokenizer = predictor.checkpoint.tokenizer
    encodings = tokenizer.tokenizer.encode_batch(list(texts))  # one Rust call, with offsets
    encoded = [_encode(t, e, tokenizer.max_length) for t, e in zip(texts, encodings, strict=True)]
    return Plan(encoded, _groups(encoded, max_steps))


def explain(
    predictor: Predictor,
    texts: Sequence[str] | Plan,
    max_steps: int = PASS_STEPS,
    stop: threading.Event | None = None,
) -> list[Explanation]:
    """Per text: the prediction and each token's contribution to it, in input order.

    ``texts`` may be a ``plan`` already made. Setting ``stop`` makes it raise ``Stopped`` before its
    next forward pass.
    """
    planned = texts if isinstance(texts, Plan) else plan(predictor, texts, max_steps)
    encoded = planned.encoded
    results: list[Explanation | None] = [None] * len(encoded)
    for group in planned.passes:
        if stop is not None and stop.is_set():
            raise Stopped
        rows = [row for i in group for row in _occlusions(encoded[i].ids)]
        log_probs = _log_probs(predictor, rows)  # (R, L)
        offset = 0
        for i in group:
            n = len(encoded[i].ids) + 1
            results[i] = _explanation(predictor.labels, encoded[i], log_probs[offset : offset + n])
            offset += n
    return results  # type: ignore[return-value]


def throughput(predictor: Predictor) -> float:
    """Token steps per second of ``predictor``'s model on explanation passes, measured once per
    predictor on passes shaped like real ones (the occlusions of texts of ``max_length`` tokens; rows
    of one length run faster), best of three (the first runs of a TorchScript model are slower)."""
    known = _throughputs.get(predictor)
    if known is None:
        config = predictor.checkpoint.config
        text = [1 + k % (config.vocab_size - 1) for k in range(config.max_length)]
        rows = _occlusions(text) * max(1, PASS_STEPS // ((len(text) + 1) * len(text)))
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            _log_probs(predictor, rows)
            best = min(best, time.perf_counter() - start)
        known = _throughputs[predictor] = len(rows) * len(text) / max(best, 1e-6)
    return known


def _encode(text: str, encoding: Encoding, max_length: int) -> _Encoded:
    placeholders = [m.span() for m in _PLACEHOLDER.finditer(text)]
    return _Encoded(
        ids=encoding.ids[:max_length],
        tokens=encoding.tokens[:max_length],
        spans=[_span(placeholders, offsets) for offsets in encoding.offsets[:max_length]],
        truncated=len(encoding.ids) > max_length,
    )


def _span(placeholders: list[tuple[int, int]], offsets: tuple[int, int]) -> tuple[int, int]:
    for start, end in placeholders:
        if start <= offsets[0] < end:
            return start, end
    return offsets


def _groups(encoded: list[_Encoded], max_steps: int) -> list[list[int]]:
    """Texts packed into forward passes of at most ``max_steps`` token steps, similar lengths together."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    groups: list[list[int]] = []
    rows = 0
    for i in order:
        n = len(encoded[i].ids)
        # Sorted by length, so the text added is the pass's longest: the rows times its length.
        if not groups or (rows + n + 1) * max(1, n) > max_steps:
            groups.append([])
            rows = 0
        groups[-1].append(i)
        rows += n + 1
    return groups


def _pass_steps(texts: list[_Encoded]) -> int:
    rows = sum(len(e.ids) + 1 for e in texts)
    return rows * max(1, max(len(e.ids) for e in texts))


def _occlusions(ids: list[int]) -> list[list[int]]:
    """The text, then the text without token 0, without token 1, ..."""
    return [ids] + [ids[:k] + ids[k + 1 :] for k in range(len(ids))]


@torch.inference_mode()
def _log_probs(predictor: Predictor, rows: list[list[int]]) -> np.ndarray:
    # An empty row (a one-token text without its token) runs as one [PAD] step, as the tokenizer does.
    lengths = torch.tensor([max(1, len(r)) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), PAD_ID, dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.tensor(row, dtype=torch.long)
    logits = predictor.model(ids.to(predictor.device), lengths)  # (R, L)
    return torch.log_softmax(logits.float() / predictor.checkpoint.temperature, dim=-1).cpu().numpy()


def _log_odds(log_p: np.ndarray) -> np.ndarray:
    # log(p / (1 - p)), with 1 - p computed stably from log p.
    return log_p - np.log(-np.expm1(np.minimum(log_p, -1e-7)))


def _explanation(labels: list[str], encoded: _Encoded, log_probs: np.ndarray) -> Explanation:
    best = int(log_probs[0].argmax())
    odds = _log_odds(log_probs[:, best].astype(np.float64))
    contributions = odds[0] - odds[1:]  # (T,)
    probabilities = np.exp(log_probs[0])
    return Explanation(
        label=labels[best],
        score=float(probabilities[best]),
        probabilities={label: float(p) for label, p in zip(labels, probabilities, strict=True)},
        tokens=[
            TokenContribution(token, start, end, float(c))
            for token, (start, end), c in zip(encoded.tokens, encoded.spans, contributions, strict=True)
        ],
        truncated=encoded.truncated,
    )
