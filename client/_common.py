"""What the sync and async clients share: requests, headers and turning answers into results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from client.retry import retry_after
from client.types import SentimentError

USER_AGENT = "lstm-sentiment-client/0.1"


def headers(api_key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    result = {"user-agent": USER_AGENT, **(extra or {})}
    if api_key:
        result["authorization"] = f"Bearer {api_key}"
    return result


def texts_body(texts: str | Sequence[str]) -> dict[str, list[str]]:
    """One text or many; a bare string is one text, not a sequence of characters."""
    return {"texts": [texts] if isinstance(texts, str) else list(texts)}


def json_or_raise(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    raise SentimentError(response.status_code, _message(response), retry_after(response))


def _message(response: httpx.Response) -> str:
    """The service's own words: ``message`` (422), ``detail`` (other errors) or ``error`` (compat)."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return str(body)


def documents_body(texts: str | Sequence[str], sentences: bool, per_text_errors: bool) -> dict[str, Any]:
    """``/predict`` with its options: sentences, and per-text errors instead of a failed request."""
    return {
        **texts_body(texts),
        "sentences": sentences,
        "errors": "per_text" if per_text_errors else "request",
    }
