"""The client: typed results from the real app in-process, retries and errors on a mock transport."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from client import AsyncSentimentClient, RetryPolicy, SentimentClient, SentimentError
from client.retry import retry_after
from service.app import create_app
from service.settings import Settings

PREDICTION = {"label": "positive", "score": 0.9, "probabilities": {"negative": 0.1, "positive": 0.9}}
OK = {"predictions": [{**PREDICTION, "truncated": False}], "model": {"name": "m", "version": "v1"}}


def scripted(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering with ``answers`` in turn, recording each request."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handle), seen


def client_with(transport: httpx.MockTransport, **options: object) -> tuple[SentimentClient, list[float]]:
    waits: list[float] = []
    return SentimentClient("http://svc", transport=transport, sleep=waits.append, **options), waits  # type: ignore[arg-type]


# --- against the real app, in-process ------------------------------------------------------------


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_sync_client_against_the_app(app_client: TestClient) -> None:
    api = SentimentClient(http_client=app_client)
    result = api.predict(["i love this", "terrible service"])
    assert [p.label for p in result.predictions] == [
        p["label"]
        for p in app_client.post("/predict", json={"texts": ["i love this", "terrible service"]}).json()[
            "predictions"
        ]
    ]
    assert result.model.name == "tiny" and sum(result.predictions[0].probabilities.values()) == pytest.approx(
        1
    )
    single = api.predict("i love this")  # a bare string is one text
    assert len(single.predictions) == 1
    explained = api.explain("great movie").explanations[0]
    assert [(t.token, t.start, t.end) for t in explained.tokens] == [("great", 0, 5), ("movie", 6, 11)]
    info = api.model_info()
    assert info.labels == ["negative", "neutral", "positive"] and info.version == result.model.version
    with pytest.raises(SentimentError) as caught:
        api.predict([" "])
    assert caught.value.status_code == 422 and "texts.0" in caught.value.message


def test_async_client_against_the_app(settings: Settings) -> None:
    app = create_app(settings)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with AsyncSentimentClient("http://app", transport=transport) as api:
                predicted, explained, info = await asyncio.gather(
                    api.predict(["i love this", "awful"]), api.explain(["awful food"]), api.model_info()
                )
        assert len(predicted.predictions) == 2 and predicted.model.name == "tiny"
        assert [t.token for t in explained.explanations[0].tokens] == ["awful", "food"]
        assert info.name == "tiny"

    asyncio.run(run())


# --- retries -------------------------------------------------------------------------------------


def test_retries_503_after_the_wait_the_server_asks_for() -> None:
    transport, seen = scripted(
        httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "overloaded"}),
        httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "slow down"}),
        httpx.Response(200, json=OK),
    )
    api, waits = client_with(transport, api_key="k1")
    result = api.predict(["hi"])
    assert result.predictions[0].label == "positive" and waits == [2.0, 1.0]
    assert len(seen) == 3 and all(r.headers["authorization"] == "Bearer k1" for r in seen)
    assert json.loads(seen[0].content) == {"texts": ["hi"]}


def test_without_retry_after_it_backs_off_exponentially_then_gives_up() -> None:
    transport, seen = scripted(*[httpx.Response(503, json={"detail": "not loaded"})] * 4)
    api, waits = client_with(transport, retry=RetryPolicy(max_retries=3, backoff=0.25))
    with pytest.raises(SentimentError) as caught:
        api.predict("hi")
    assert waits == [0.25, 0.5, 1.0] and len(seen) == 4
    assert caught.value.status_code == 503 and caught.value.message == "not loaded"


def test_a_wait_past_the_bound_is_not_waited_for() -> None:
    transport, seen = scripted(httpx.Response(429, headers={"Retry-After": "120"}, json={"error": "quota"}))
    api, waits = client_with(transport, retry=RetryPolicy(max_wait=10))
    with pytest.raises(SentimentError) as caught:
        api.model_info()
    assert waits == [] and len(seen) == 1
    assert caught.value.retry_after == 120 and caught.value.message == "quota"


@pytest.mark.parametrize("status", [400, 401, 413, 422, 500, 504])
def test_other_errors_are_raised_at_once(status: int) -> None:
    transport, seen = scripted(httpx.Response(status, json={"message": "what to fix", "detail": []}))
    api, waits = client_with(transport)
    with pytest.raises(SentimentError, match=f"{status}: what to fix"):
        api.explain("hi")
    assert len(seen) == 1 and waits == []


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    seconds = retry_after(httpx.Response(503, headers={"Retry-After": when}))
    assert seconds is not None and 1 < seconds <= 3
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None


def test_async_client_retries_too() -> None:
    transport, seen = scripted(
        httpx.Response(503, headers={"Retry-After": "1"}), httpx.Response(200, json=OK)
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def run() -> str:
        async with AsyncSentimentClient("http://svc", transport=transport, sleep=sleep) as api:
            return (await api.predict("hi")).predictions[0].label

    assert asyncio.run(run()) == "positive" and waits == [1.0] and len(seen) == 2


def test_model_info_ignores_fields_it_does_not_know() -> None:
    info = {
        "name": "m", "version": "v", "labels": ["a", "b"], "config": {}, "temperature": 1.0,
        "metrics": {}, "provenance": {}, "training": {}, "new_field": 1,
    }  # fmt: skip
    transport, _ = scripted(httpx.Response(200, json=info))
    api, _ = client_with(transport)
    assert api.model_info().labels == ["a", "b"]
