"""Typed results of the service's JSON answers, and the one error type the client raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SentimentError(Exception):
    """The service answered with an error (after any retries); ``message`` says what to fix.

    ``status_code`` is ``None`` when there was no answer at all (connection refused, timed out, after
    the retries); the ``httpx`` error is then the ``__cause__``.
    """

    def __init__(self, status_code: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(message if status_code is None else f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after  # seconds the service asked to wait, when it said


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    probabilities: dict[str, float]
    truncated: bool = False


@dataclass(frozen=True)
class PredictResult:
    predictions: list[Prediction]
    model: ModelRef

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictResult:
        return cls([_prediction(p) for p in data["predictions"]], ModelRef(**data["model"]))


@dataclass(frozen=True)
class TokenContribution:
    token: str
    start: int  # the token's characters in the text: text[start:end]
    end: int
    contribution: float  # > 0 pushes towards the predicted label, < 0 away from it


@dataclass(frozen=True)
class Explanation(Prediction):
    tokens: list[TokenContribution] = field(default_factory=list)


@dataclass(frozen=True)
class ExplainResult:
    explanations: list[Explanation]
    method: str
    model: ModelRef

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExplainResult:
        explanations = [
            Explanation(**_prediction(e).__dict__, tokens=[TokenContribution(**t) for t in e["tokens"]])
            for e in data["explanations"]
        ]
        return cls(explanations, data["method"], ModelRef(**data["model"]))


@dataclass(frozen=True)
class Limits:
    """The server's request limits (``GET /v1/model``); the client splits longer lists to fit them."""

    max_texts_per_request: int
    max_text_chars: int
    max_body_bytes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        return cls(
            int(data["max_texts_per_request"]), int(data["max_text_chars"]), int(data["max_body_bytes"])
        )


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    labels: list[str]
    config: dict[str, Any]
    temperature: float
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    training: dict[str, Any]
    limits: Limits | None = None  # None from a server too old to say

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        known = cls.__dataclass_fields__
        fields = {k: v for k, v in data.items() if k in known}  # newer servers may add fields
        if isinstance(fields.get("limits"), dict):
            fields["limits"] = Limits.from_json(fields["limits"])
        else:
            fields.pop("limits", None)
        return cls(**fields)


@dataclass(frozen=True)
class Sentence:
    start: int  # the sentence in its text: text[start:end], code points (Python str indices)
    end: int
    label: str
    score: float
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Document(Prediction):
    """A text's prediction (the mean of its sentences'), whether its sentences disagree, and them."""

    mixed: bool = False
    sentences: list[Sentence] = field(default_factory=list)


@dataclass(frozen=True)
class TextError:
    index: int  # position in the texts sent
    status: int  # 413 or 422: what the text alone would have got
    detail: str


@dataclass(frozen=True)
class DocumentsResult:
    """``predict_documents``: one ``Document`` per text, ``None`` for a text listed in ``errors``."""

    documents: list[Document | None]
    errors: list[TextError]
    model: ModelRef

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DocumentsResult:
        documents = [
            None
            if d is None
            else Document(
                **_prediction(d).__dict__,
                mixed=bool(d.get("mixed", False)),
                sentences=[Sentence(**s) for s in d.get("sentences") or []],
            )
            for d in data["predictions"]
        ]
        errors = [TextError(**e) for e in data.get("errors") or []]
        return cls(documents, errors, ModelRef(**data["model"]))


def _prediction(data: dict[str, Any]) -> Prediction:
    return Prediction(data["label"], data["score"], data["probabilities"], data.get("truncated", False))
