"""The asyncio client: the same methods as ``SentimentClient``, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import httpx

from client._common import documents_body, headers, json_or_raise, texts_body
from client.retry import RetryPolicy
from client.types import DocumentsResult, ExplainResult, ModelInfo, PredictResult


class AsyncSentimentClient:
    """``await predict(...)``, ``explain`` and ``model_info``; use it with ``async with``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        extra_headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = http_client or httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self._headers = headers(api_key, extra_headers)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    async def predict(self, texts: str | Sequence[str]) -> PredictResult:
        """Label, score and probabilities of each text, in input order."""
        return PredictResult.from_json(await self._request("POST", "/predict", texts_body(texts)))

    async def predict_documents(
        self, texts: str | Sequence[str], *, sentences: bool = True, per_text_errors: bool = False
    ) -> DocumentsResult:
        """Each text whole (a long one read by sentences); with ``sentences`` each sentence's span and
        prediction too; with ``per_text_errors`` a bad text is ``None`` with an entry in ``errors``."""
        body = documents_body(texts, sentences, per_text_errors)
        return DocumentsResult.from_json(await self._request("POST", "/predict", body))

    async def explain(self, texts: str | Sequence[str]) -> ExplainResult:
        """Predictions plus each token's contribution and character span."""
        return ExplainResult.from_json(await self._request("POST", "/explain", texts_body(texts)))

    async def model_info(self) -> ModelInfo:
        """The served model: name, version, labels, config, metrics and provenance."""
        return ModelInfo.from_json(await self._request("GET", "/v1/model"))

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        attempt = 0
        while True:
            response = await self._http.request(method, path, json=body, headers=self._headers)
            wait = self.retry.delay(response, attempt)
            if wait is None:
                return json_or_raise(response)
            await self._sleep(wait)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSentimentClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
