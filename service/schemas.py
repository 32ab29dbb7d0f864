"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError


def _has_text(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "must contain a non-whitespace character")
    return text


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


_TEXT_SCHEMA = {"type": "string", "pattern": r"\S"}
Text = Annotated[str, AfterValidator(_has_text), WithJsonSchema(_TEXT_SCHEMA)]
# One text or a non-empty list of them; a single string answers as a list of one.
Texts = Annotated[
    list[Text],
    BeforeValidator(_listed),
    WithJsonSchema({"anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1}]}),
]


class TextsRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"texts": ["I absolutely love this, it's wonderful", "This is the worst, I hate it"]}
            ]
        },
    )

    texts: Texts = Field(
        min_length=1,
        description="a text or a list of texts to classify; each must contain a non-whitespace character",
    )


# /predict checks each text itself (blank, too long), so that ``errors: per_text`` can answer for the
# others: its schema takes any string.
AnyTexts = Annotated[
    list[str],
    BeforeValidator(_listed),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    ),
]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"texts": ["I absolutely love this, it's wonderful", "This is the worst, I hate it"]},
                {
                    "texts": ["The screen is gorgeous. The battery died in a day.", ""],
                    "sentences": True,
                    "errors": "per_text",
                },
            ]
        },
    )

    texts: AnyTexts = Field(
        min_length=1,
        description="a text or a list of texts to classify; each must contain a non-whitespace character "
        "(422) and at most SENTIMENT_MAX_TEXT_CHARS characters (413)",
    )
    sentences: bool = Field(
        False,
        strict=True,
        description="also answer per sentence: each prediction gets `sentences` (spans, labels, "
        "probabilities) and `mixed`, and its document prediction is the mean of its sentences'",
    )
    errors: Literal["request", "per_text"] = Field(
        "request",
        description="request: one bad text fails the request (422 or 413). per_text: 200, a bad text's "
        "prediction is null and `errors` says why, by index",
    )


class LabelOut(BaseModel):
    label: str = Field(description="the most probable label")
    score: float = Field(ge=0, le=1, description="probability of `label`")
    probabilities: dict[str, float] = Field(description="probability of every label")


class PredictionOut(LabelOut):
    truncated: bool = Field(
        description="part of the text was not read (a window of a very long sentence over the model's "
        "length); a long text is read whole, by sentences, and is not truncated"
    )


class SentenceOut(LabelOut):
    start: int = Field(ge=0, description="offset of the sentence's first character (a code point)")
    end: int = Field(ge=0, description="end of the sentence: text[start:end], in code points")


class DocumentOut(PredictionOut):
    mixed: bool | None = Field(
        None,
        description="with sentences: two opposing labels (positive and negative) each win at least 20 % "
        "of the text's sentences",
    )
    sentences: list[SentenceOut] | None = Field(
        None, description="with sentences: every sentence, in text order, with its prediction"
    )


class TextErrorOut(BaseModel):
    index: int = Field(ge=0, description="position of the text in `texts`")
    status: int = Field(description="the HTTP status this text alone would have had (413 or 422)")
    detail: str = Field(description="what is wrong with it, and what to fix")


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    predictions: list[DocumentOut | None] = Field(
        description="in input order; null only with errors: per_text, for a text listed in `errors`"
    )
    errors: list[TextErrorOut] | None = Field(None, description="with errors: per_text: each bad text")
    model: ModelRef


class Limits(BaseModel):
    max_texts_per_request: int = Field(description="most texts in one request; past it, 413")
    max_text_chars: int = Field(description="most characters in one text; past it, 413")
    max_body_bytes: int = Field(description="largest request body in bytes; past it, 413")
    max_sentences_per_request: int | None = Field(
        None, description="most sentences read for one request (sentences on, or long texts); past it, 413"
    )


class ModelInfo(ModelRef):
    labels: list[str]
    config: dict[str, Any]
    temperature: float
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    training: dict[str, Any]
    limits: Limits = Field(description="this server's request limits, for clients that split their lists")


class Health(BaseModel):
    status: str


class ExplainRequest(TextsRequest):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["the food was great but the service was terrible"]}]},
    )


class TokenContributionOut(BaseModel):
    token: str = Field(description="the token as the model saw it (normalised, or [UNK])")
    start: int = Field(ge=0, description="character offset of the token in the text")
    end: int = Field(ge=0, description="end of the token's characters: text[start:end]")
    contribution: float = Field(
        description="drop in the predicted label's log-odds when the token is removed "
        "(> 0 supports the label, < 0 argues against it)"
    )


class ExplanationOut(PredictionOut):
    tokens: list[TokenContributionOut] = Field(description="every token the model saw, in text order")


class ExplainResponse(BaseModel):
    explanations: list[ExplanationOut]
    method: str = Field(description="how contributions are computed")
    model: ModelRef
