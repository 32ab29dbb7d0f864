"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"texts": ["I absolutely love this, it's wonderful", "This is the worst, I hate it"]}
            ]
        },
    )

    texts: list[Text] = Field(
        min_length=1, description="texts to classify; each must contain a non-whitespace character"
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


class ModelInfo(ModelRef):
    labels: list[str]
    config: dict[str, Any]
    temperature: float
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    training: dict[str, Any]


class Health(BaseModel):
    status: str
