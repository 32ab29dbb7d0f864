"""A small typed client for the sentiment service, sync and async (httpx), with bounded retries.

from client import SentimentClient

with SentimentClient("http://127.0.0.1:8000") as api:
    result = api.predict(["I love it", "I hate it"])
    print(result.predictions[0].label, result.predictions[0].score)
"""

from client.aio import AsyncSentimentClient
from client.retry import RetryPolicy
from client.sync import SentimentClient
from client.types import (
    Document,
    DocumentsResult,
    ExplainResult,
    Explanation,
    Limits,
    ModelInfo,
    ModelRef,
    Prediction,
    PredictResult,
    Sentence,
    SentimentError,
    TextError,
    TokenContribution,
)

__all__ = [
    "AsyncSentimentClient",
    "Document",
    "DocumentsResult",
    "ExplainResult",
    "Explanation",
    "Limits",
    "ModelInfo",
    "ModelRef",
    "PredictResult",
    "Prediction",
    "RetryPolicy",
    "Sentence",
    "SentimentClient",
    "SentimentError",
    "TextError",
    "TokenContribution",
]
