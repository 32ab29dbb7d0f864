"""The client when the server cannot be reached, and long lists split to fit the server's limits."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from client import AsyncSentimentClient, Limits, RetryPolicy, SentimentClient, SentimentError
from client._common import encode, split
from service.app import create_app
from service.settings import Settings

MODEL = {"name": "m", "version": "v1"}
INFO = {
    "name": "m", "version": "v1", "labels": ["negative", "positive"], "config": {}, "temperature": 1.0,
    "metrics": {}, "provenance": {}, "training": {},
}  # fmt: skip


def prediction(text: str) -> dict[str, object]:
    """A prediction that names its text, so the order of the answers can be checked."""
    return {"label": text, "score": 0.5, "probabilities": {"negative": 0.5, "positive": 0.5}}


class FakeService:
    """/v1/model with ``limits`` (404 when ``None``), and /predict and /explain answering each text,
    enforcing the limits as the real server does; every request is recorded."""

    def __init__(self, limits: dict[str, int] | None, versions: list[str] | None = None) -> None:
        self.limits = limits
        self.versions = versions  # the model version of each POST in turn (default: v1)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path == "/v1/model":
            if self.limits is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json={**INFO, "limits": self.limits})
        if self.limits and len(request.content) > self.limits["max_body_bytes"]:
            return httpx.Response(413, json={"detail": "body too large"})
        texts = json.loads(request.content)["texts"]
        if self.limits and len(texts) > self.limits["max_texts_per_request"]:
            return httpx.Response(413, json={"detail": f"{len(texts)} texts in one request"})
        model = {**MODEL, "version": self.versions.pop(0)} if self.versions else MODEL
        if request.url.path == "/explain":
            explanations = [{**prediction(t), "tokens": []} for t in texts]
            return httpx.Response(
                200, json={"explanations": explanations, "method": "occlusion", "model": model}
            )
        return httpx.Response(200, json={"predictions": [prediction(t) for t in texts], "model": model})

    def posts(self) -> list[list[str]]:
        return [json.loads(r.content)["texts"] for r in self.seen if r.method == "POST"]

    def gets(self) -> int:
        return sum(r.url.path == "/v1/model" for r in self.seen)


def limits(texts: int = 256, body: int = 2 * 1024 * 1024) -> dict[str, int]:
    return {"max_texts_per_request": texts, "max_text_chars": 5000, "max_body_bytes": body}


def fake_client(service: FakeService, **options: object) -> SentimentClient:
    return SentimentClient("http://svc", transport=httpx.MockTransport(service), **options)  # type: ignore[arg-type]


def failing(error: Callable[[httpx.Request], Exception], then: list[httpx.Response] | None = None):  # type: ignore[no-untyped-def]
    """A transport that raises ``error(request)`` until ``then`` is non-empty, which it answers in turn."""
    seen: list[httpx.Request] = []
    answers = list(then or [])

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if answers and len(seen) > 1:
            return answers.pop(0)
        raise error(request)

    return httpx.MockTransport(handle), seen


def refused(request: httpx.Request) -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


# --- transport errors --------------------------------------------------------------------------------


def test_connection_refused_is_retried_then_raised_as_a_sentiment_error() -> None:
    transport, seen = failing(refused)
    waits: list[float] = []
    api = SentimentClient("http://svc:8000", transport=transport, sleep=waits.append)
    with pytest.raises(SentimentError) as caught:
        api.predict("hi")
    error = caught.value
    assert len(seen) == 4 and waits == [0.5, 1.0, 2.0]  # the default policy, as for a 503
    assert error.status_code is None and error.retry_after is None
    assert (
        error.message
        == "cannot reach http://svc:8000: connection refused (4 attempts); is the server running?"
    )
    assert str(error) == error.message
    assert isinstance(error.__cause__, httpx.ConnectError)


def test_a_transport_error_then_an_answer_is_a_result() -> None:
    ok = {"predictions": [prediction("hi")], "model": MODEL}
    transport, seen = failing(refused, then=[httpx.Response(200, json=ok)])
    waits: list[float] = []
    api = SentimentClient("http://svc", transport=transport, sleep=waits.append)
    assert api.predict("hi").predictions[0].label == "hi"
    assert len(seen) == 2 and waits == [0.5]


@pytest.mark.parametrize(
    "error",
    [
        lambda r: httpx.ReadTimeout("timed out", request=r),
        lambda r: httpx.ConnectTimeout("timed out", request=r),
        lambda r: httpx.RemoteProtocolError("Server disconnected without sending a response.", request=r),
        lambda r: httpx.ReadError("", request=r),
    ],
)
def test_every_transport_error_becomes_a_sentiment_error(error: Callable[[httpx.Request], Exception]) -> None:
    transport, seen = failing(error)
    waits: list[float] = []
    api = SentimentClient(
        "http://svc", transport=transport, sleep=waits.append, retry=RetryPolicy(max_retries=1)
    )
    with pytest.raises(SentimentError) as caught:
        api.model_info()
    assert len(seen) == 2 and waits == [0.5]
    assert caught.value.status_code is None and isinstance(caught.value.__cause__, httpx.TransportError)
    if isinstance(caught.value.__cause__, httpx.TimeoutException):
        assert caught.value.message.startswith("no answer from http://svc in time")
    else:
        assert caught.value.message.startswith("cannot reach http://svc: ")
        assert "is the server running?" in caught.value.message


def test_a_real_refused_connection() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []
    api = SentimentClient(f"http://127.0.0.1:{port}", sleep=waits.append, timeout=5)
    with api, pytest.raises(SentimentError) as caught:
        api.predict(["a", "b"])  # the limits request fails first, the same way
    assert caught.value.status_code is None and len(waits) == 3
    assert f"cannot reach http://127.0.0.1:{port}" in caught.value.message
    assert "refused" in caught.value.message.lower()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_async_client_turns_transport_errors_into_sentiment_errors() -> None:
    transport, seen = failing(refused)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def run() -> SentimentError:
        async with AsyncSentimentClient("http://svc", transport=transport, sleep=sleep) as api:
            with pytest.raises(SentimentError) as caught:
                await api.explain("hi")
            return caught.value

    error = asyncio.run(run())
    assert error.status_code is None and "cannot reach http://svc" in error.message
    assert len(seen) == 4 and waits == [0.5, 1.0, 2.0]


# --- splitting -----------------------------------------------------------------------------------------


def test_300_texts_with_a_limit_of_256_are_two_requests_in_order() -> None:
    service = FakeService(limits(texts=256))
    api = fake_client(service)
    texts = [f"text {i}" for i in range(300)]
    result = api.predict(texts)
    assert [p.label for p in result.predictions] == texts and result.model.version == "v1"
    assert [len(chunk) for chunk in service.posts()] == [256, 44] and service.gets() == 1
    assert all(r.headers["content-type"] == "application/json" for r in service.seen if r.method == "POST")
    api.predict(texts)  # the limits are read once
    assert service.gets() == 1 and len(service.posts()) == 4


def test_chunks_are_cut_to_fit_the_body_limit() -> None:
    service = FakeService(limits(texts=1000, body=1024))
    api = fake_client(service)
    texts = [f"{i:03d} " + "é" * 59 for i in range(40)]  # 124 bytes each as UTF-8 JSON: 8 to a body
    result = api.predict(texts)
    assert [p.label for p in result.predictions] == texts
    bodies = [r.content for r in service.seen if r.method == "POST"]
    assert len(bodies) == 5 and all(len(body) <= 1024 for body in bodies)
    assert [len(chunk) for chunk in service.posts()] == [8] * 5
    for body, chunk in zip(bodies[:-1], service.posts()[1:], strict=True):
        assert len(body) + 1 + len(encode(chunk[0])) > 1024  # each chunk is as full as it can be


def test_explain_splits_too() -> None:
    service = FakeService(limits(texts=2))
    explained = fake_client(service).explain(["a", "b", "c", "d", "e"])
    assert [e.label for e in explained.explanations] == ["a", "b", "c", "d", "e"]
    assert explained.method == "occlusion" and service.posts() == [["a", "b"], ["c", "d"], ["e"]]


def test_a_server_without_v1_model_gets_one_request() -> None:
    service = FakeService(None)
    api = fake_client(service)
    texts = [f"t{i}" for i in range(300)]
    assert len(api.predict(texts).predictions) == 300
    assert api.predict(texts).model.name == "m"
    assert [len(chunk) for chunk in service.posts()] == [300, 300] and service.gets() == 1  # 404 remembered


def test_a_failing_limits_request_is_raised_and_not_remembered() -> None:
    answers = [httpx.Response(401, json={"detail": "missing API key"}), httpx.Response(200, json=INFO)]
    posted: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return answers.pop(0)
        posted.append(request)
        return httpx.Response(200, json={"predictions": [prediction("a"), prediction("b")], "model": MODEL})

    api = SentimentClient("http://svc", transport=httpx.MockTransport(handle))
    with pytest.raises(SentimentError, match="401: missing API key"):
        api.predict(["a", "b"])
    assert posted == []
    assert len(api.predict(["a", "b"]).predictions) == 2  # asked again; no limits in the answer: no split


def test_one_text_does_not_ask_for_the_limits() -> None:
    service = FakeService(limits(texts=1))
    assert fake_client(service).predict("hi").predictions[0].label == "hi"
    assert service.gets() == 0 and service.posts() == [["hi"]]


def test_model_info_fills_the_limits_cache() -> None:
    service = FakeService(limits(texts=2))
    api = fake_client(service)
    assert api.model_info().limits == Limits(2, 5000, 2 * 1024 * 1024)
    api.predict(["a", "b", "c"])
    assert service.gets() == 1 and service.posts() == [["a", "b"], ["c"]]


def test_a_model_change_between_chunks_is_an_error() -> None:
    service = FakeService(limits(texts=2), versions=["v1", "v2"])
    with pytest.raises(SentimentError, match="model changed") as caught:
        fake_client(service).predict(["a", "b", "c"])
    assert caught.value.status_code is None


def test_split_counts_the_bytes_it_sends() -> None:
    texts = ['quote " and \\ backslash', "naïve ünïcode", "\n", "x" * 300] * 10
    chunks = split(texts, Limits(max_texts_per_request=7, max_text_chars=5000, max_body_bytes=400))
    assert [t for chunk in chunks for t in chunk] == texts
    assert all(0 < len(chunk) <= 7 and len(encode({"texts": chunk})) <= 400 for chunk in chunks)
    too_big = split(["y" * 500, "z"], Limits(10, 5000, 400))
    assert too_big == [["y" * 500], ["z"]]  # sent alone: the server says why it is too big
    assert split([], Limits(10, 5000, 400)) == [[]] and split(texts, None) == [texts]


# --- against the real app ------------------------------------------------------------------------------


def test_splitting_against_the_app(settings: Settings) -> None:
    small = settings.model_copy(update={"max_texts_per_request": 2})
    texts = ["i love this", "terrible service", "great movie", "awful food", "the meeting is at noon"]
    with TestClient(create_app(small)) as app_client:
        assert app_client.post("/predict", json={"texts": texts}).status_code == 413
        expected = [
            app_client.post("/predict", json={"texts": [t]}).json()["predictions"][0]["label"] for t in texts
        ]
        api = SentimentClient(http_client=app_client)
        assert [p.label for p in api.predict(texts).predictions] == expected
        assert [e.label for e in api.explain(texts).explanations] == expected

    app = create_app(small)

    async def run() -> list[str]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AsyncSentimentClient("http://app", transport=transport) as api:
                return [p.label for p in (await api.predict(texts)).predictions]

    assert asyncio.run(run()) == expected
