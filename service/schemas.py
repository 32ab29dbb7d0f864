"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

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


class PredictRequest(BaseModel):
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


class PredictionOut(BaseModel):
    label: str = Field(description="the most probable label")
    score: float = Field(ge=0, le=1, description="probability of `label`")
    probabilities: dict[str, float] = Field(description="probability of every label")
    truncated: bool = Field(description="the text was longer than the model's max_length tokens")


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    model: ModelRef


class Limits(BaseModel):
    max_texts_per_request: int = Field(description="most texts in one request; past it, 413")
    max_text_chars: int = Field(description="most characters in one text; past it, 413")
    max_body_bytes: int = Field(description="largest request body in bytes; past it, 413")


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


class ExplainRequest(PredictRequest):
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
