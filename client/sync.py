"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import cast

import httpx

from client._common import REQUEST_ERRORS, ClientBase, Core, Outcome, Steps, T, Wait
from client.retry import RetryPolicy
from client.types import DocumentsResult, ExplainResult, ModelInfo, PredictResult


class SentimentClient(ClientBase):
    """``predict``, ``explain`` and ``model_info`` against a running service; use it as a context manager.

    ``http_client`` replaces the ``httpx.Client`` it would make (a test client, a shared pool); ``sleep``
    is how it waits between retries. A server that cannot be reached (connection refused, timed out) is
    retried like a 503, then raises ``SentimentError`` with ``status_code=None``; never a raw httpx error.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        extra_headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._core = Core(str(self._http.base_url), api_key, extra_headers, retry or RetryPolicy())
        self._sleep = sleep

    def predict(self, texts: str | Sequence[str]) -> PredictResult:
        """Label, score and probabilities of each text, in input order (a list longer than the server
        takes in one request is sent in several, in order, and answered as one)."""
        return self._run(self._core.predict(texts))

    def predict_documents(
        self, texts: str | Sequence[str], *, sentences: bool = True, per_text_errors: bool = False
    ) -> DocumentsResult:
        """Each text whole (a long one read by sentences); with ``sentences`` each sentence's span and
        prediction too; with ``per_text_errors`` a bad text is ``None`` with an entry in ``errors``."""
        return self._run(self._core.documents(texts, sentences, per_text_errors))

    def explain(self, texts: str | Sequence[str]) -> ExplainResult:
        """Predictions plus each token's contribution and character span (long lists split as ``predict``)."""
        return self._run(self._core.explain(texts))

    def model_info(self) -> ModelInfo:
        """The served model: name, version, labels, config, metrics and provenance."""
        return self._run(self._core.model_info())

    def _run(self, steps: Steps[T]) -> T:
        """Perform one call's steps: requests (a transport error goes back as the outcome) and waits."""
        outcome: Outcome = None
        while True:
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return cast(T, done.value)
            if isinstance(step, Wait):
                self._sleep(step.seconds)
                outcome = None
                continue
            try:
                outcome = self._http.request(
                    step.method, step.path, content=step.content, headers=step.headers
                )
            except REQUEST_ERRORS as error:
                outcome = error

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
