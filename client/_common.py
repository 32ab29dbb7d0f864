"""What the sync and async clients share: every decision, written once.

Each call (``Core.predict``, ``Core.explain``, ``Core.model_info``) is a generator of steps: it yields
``Send`` (make this HTTP request; send me back the ``httpx.Response``, or the ``httpx.RequestError``
it raised) and ``Wait`` (sleep this long), and returns the result. Retries, the server's limits,
splitting long lists and merging their answers all live here; ``SentimentClient`` and
``AsyncSentimentClient`` only perform the steps, one blocking and one awaited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from client.retry import RetryPolicy, retry_after
from client.types import DocumentsResult, ExplainResult, Limits, ModelInfo, PredictResult, SentimentError

USER_AGENT = "lstm-sentiment-client/0.1"

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None = None


@dataclass(frozen=True)
class Wait:
    seconds: float


Step = Send | Wait
Outcome = httpx.Response | Exception | None  # the answer to a Send (a response or what it raised); Wait: None
Steps = Generator[Step, Outcome, T]

# What a request that got no answer raises: httpx's, and httpx2's (a fork; starlette's TestClient uses it).
# Any request error (a redirect loop, an answer that cannot be decoded) is wrapped too; only transport
# errors, where the request may never have reached the server, are tried again.
REQUEST_ERRORS: tuple[type[Exception], ...] = (httpx.RequestError,)
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError,)
TIMEOUT_ERRORS: tuple[type[Exception], ...] = (httpx.TimeoutException,)
try:
    import httpx2

    REQUEST_ERRORS += (httpx2.RequestError,)
    TRANSPORT_ERRORS += (httpx2.TransportError,)
    TIMEOUT_ERRORS += (httpx2.TimeoutException,)
except ImportError:  # pragma: no cover - httpx2 is optional
    pass

_PREFIX, _SUFFIX = b'{"texts":[', b"]}"  # a body is _PREFIX + the texts, comma-separated + _SUFFIX


class Core:
    """The client's state (headers, retry policy, the server's limits once read) and its calls."""

    def __init__(
        self, base_url: str, api_key: str | None, extra_headers: dict[str, str] | None, retry: RetryPolicy
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = headers(api_key, extra_headers)
        self.retry = retry
        self._limits: Limits | None = None
        self._limits_read = False  # the server was asked (and _limits is its answer, None if it has none)

    def predict(self, texts: str | Sequence[str]) -> Steps[PredictResult]:
        answers = yield from self._split_call("/predict", listed(texts))
        return PredictResult.from_json(merge(answers, "predictions"))

    def explain(self, texts: str | Sequence[str]) -> Steps[ExplainResult]:
        answers = yield from self._split_call("/explain", listed(texts))
        return ExplainResult.from_json(merge(answers, "explanations"))

    def documents(
        self, texts: str | Sequence[str], sentences: bool, per_text_errors: bool
    ) -> Steps[DocumentsResult]:
        """``/predict`` with its options, in one request: sentences, and per-text errors."""
        body = {"texts": listed(texts), "sentences": sentences}
        body["errors"] = "per_text" if per_text_errors else "request"
        return DocumentsResult.from_json((yield from self.call("POST", "/predict", body)))

    def model_info(self) -> Steps[ModelInfo]:
        info = ModelInfo.from_json((yield from self.call("GET", "/v1/model")))
        self._remember(info.limits)
        return info

    def limits(self) -> Steps[Limits | None]:
        """The server's limits, asked for once (``GET /v1/model``); ``None`` from a server without them."""
        if not self._limits_read:
            try:
                data = yield from self.call("GET", "/v1/model")
            except SentimentError as error:
                if error.status_code != 404:
                    raise
                data = {}  # a server without /v1/model: do not split
            found = data.get("limits") if isinstance(data, dict) else None
            self._remember(Limits.from_json(found) if isinstance(found, dict) else None)
        return self._limits

    def _remember(self, limits: Limits | None) -> None:
        self._limits, self._limits_read = limits, True

    def _split_call(self, path: str, texts: list[str]) -> Steps[list[dict[str, Any]]]:
        """POST ``texts`` in as many requests as the server's limits need, in order; their answers."""
        limits = (yield from self.limits()) if len(texts) > 1 else None  # one text cannot be split
        if limits is not None:
            check_lengths(texts, limits)
        answers = []
        offset = 0
        for chunk in split(texts, limits):
            answers += yield from self._post(path, chunk, offset)
            offset += len(chunk)
        return answers

    def _post(self, path: str, texts: list[str], offset: int) -> Steps[list[dict[str, Any]]]:
        """POST ``texts`` (``offset`` into the caller's list); a 413 for more than one text is split in
        halves and sent again: a limit the server does not report (``/explain`` refuses what would not
        fit its deadline) or a server without ``/v1/model``."""
        try:
            return [(yield from self.call("POST", path, {"texts": texts}))]
        except SentimentError as error:
            if error.status_code != 413 or len(texts) == 1:
                raise reindexed(error, offset) from error.__cause__
        half = len(texts) // 2
        first = yield from self._post(path, texts[:half], offset)
        return first + (yield from self._post(path, texts[half:], offset + half))

    def call(self, method: str, path: str, body: Any = None) -> Steps[Any]:
        """One request, retried by the policy on 503, 429 and transport errors; its JSON answer."""
        if body is None:
            send = Send(method, path, self.headers)
        else:
            send = Send(method, path, {**self.headers, "content-type": "application/json"}, encode(body))
        attempt = 0
        while True:
            outcome = yield send
            if isinstance(outcome, Exception):  # no answer: one of REQUEST_ERRORS
                retried = isinstance(outcome, TRANSPORT_ERRORS)
                wait = self.retry.delay_after_error(attempt) if retried else None
                if wait is None:
                    raise unreachable(self.base_url, outcome, attempt + 1) from outcome
            else:
                assert outcome is not None
                wait = self.retry.delay(outcome, attempt)
                if wait is None:
                    return json_or_raise(outcome)
            yield Wait(wait)
            attempt += 1


def headers(api_key: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    result = {"user-agent": USER_AGENT, **(extra or {})}
    if api_key:
        result["authorization"] = f"Bearer {api_key}"
    return result


def listed(texts: str | Sequence[str]) -> list[str]:
    """One text or many; a bare string is one text, not a sequence of characters."""
    return [texts] if isinstance(texts, str) else list(texts)


def encode(body: Any) -> bytes:
    """The exact bytes sent: compact JSON in UTF-8, so the client can count them against the limit."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def check_lengths(texts: list[str], limits: Limits) -> None:
    """Refuse, before anything is sent, a text longer than the server takes (it cannot be split)."""
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise SentimentError(
                413,
                f"texts.{i} has {len(text)} characters; the server's limit is {limits.max_text_chars} "
                "(SENTIMENT_MAX_TEXT_CHARS): shorten it (nothing was sent)",
            )


def split(texts: list[str], limits: Limits | None) -> list[list[str]]:
    """``texts`` in order, in chunks of at most ``max_texts_per_request`` texts whose body
    (``{"texts":[...]}``) is at most ``max_body_bytes``. A text too big for a body on its own goes
    alone (the server answers 413 and says why); no limits: one chunk."""
    if limits is None or not texts:
        return [texts]
    room = limits.max_body_bytes - len(_PREFIX) - len(_SUFFIX)
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for text in texts:
        cost = len(encode(text))
        if chunk and (len(chunk) >= limits.max_texts_per_request or size + 1 + cost > room):
            chunks.append(chunk)
            chunk, size = [], 0
        size += cost + (1 if chunk else 0)  # the comma before every text but the first
        chunk.append(text)
    chunks.append(chunk)
    return chunks


def merge(answers: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """One answer from a split request's answers: their ``key`` lists concatenated in order."""
    first = answers[0]
    for answer in answers[1:]:
        if answer.get("model") != first.get("model"):
            raise SentimentError(
                None,
                f"the server's model changed from {first.get('model')} to {answer.get('model')} "
                "between the parts of a split request; send it again",
            )
    return {**first, key: [item for answer in answers for item in answer[key]]}


def reindexed(error: SentimentError, offset: int) -> SentimentError:
    """``error`` from one part of a split request, its ``texts.N`` counted in the caller's list."""
    if offset == 0:
        return error
    message = re.sub(r"\btexts\.(\d+)", lambda m: f"texts.{int(m.group(1)) + offset}", error.message)
    return SentimentError(error.status_code, message, error.retry_after)


def json_or_raise(response: httpx.Response) -> Any:
    if not response.is_success:
        raise SentimentError(response.status_code, _message(response), retry_after(response))
    try:
        return response.json()
    except ValueError as error:  # a proxy's HTML page, a truncated body
        kind = response.headers.get("content-type", "no content type")
        raise SentimentError(
            response.status_code, f"the answer is not JSON ({kind}): is {response.url} the sentiment service?"
        ) from error


def unreachable(base_url: str, error: Exception, attempts: int) -> SentimentError:
    """The error for a request that never got an answer, in words that say what to check."""
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if not isinstance(error, TRANSPORT_ERRORS):  # it answered, but not usably (a redirect loop, ...)
        return SentimentError(None, f"no usable answer from {base_url}: {_reason(error)} ({tries})")
    if isinstance(error, TIMEOUT_ERRORS):
        return SentimentError(
            None,
            f"no answer from {base_url} in time ({type(error).__name__}, {tries}); "
            "is the server running, or overloaded? (a longer timeout= may help)",
        )
    return SentimentError(
        None, f"cannot reach {base_url}: {_reason(error)} ({tries}); is the server running?"
    )


def _reason(error: Exception) -> str:
    """``[Errno 111] Connection refused`` → ``connection refused``; the error's type if it says nothing."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(error).strip())
    if not text:
        return type(error).__name__
    return text[0].lower() + text[1:]


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


class ClientBase:
    """The attributes both clients expose over their ``Core``."""

    _core: Core

    @property
    def retry(self) -> RetryPolicy:
        return self._core.retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._core.retry = policy
