"""A 413 the limits did not foresee is split in halves; a text too long is refused before sending;
errors from part of a split list name the caller's index; every httpx error is a SentimentError."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi.testclient import TestClient

from client import AsyncSentimentClient, RetryPolicy, SentimentClient, SentimentError
from service import explain_routes
from service.app import create_app
from service.settings import Settings
from tests.client.test_faults_and_splitting import FakeService, fake_client, limits


class Budget(FakeService):
    """A server that also refuses more than ``most`` texts with 413, without saying so in its limits
    (as /explain refuses what would not fit its deadline)."""

    def __init__(self, most: int, reported: dict[str, int] | None) -> None:
        super().__init__(reported)
        self.most = most

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            texts = json.loads(request.content)["texts"]
            if len(texts) > self.most:
                self.seen.append(request)
                return httpx.Response(413, json={"detail": "would not fit the deadline"})
            blank = [i for i, t in enumerate(texts) if not t.strip()]
            if blank:
                self.seen.append(request)
                return httpx.Response(422, json={"detail": f"texts.{blank[0]}: must not be blank"})
        return super().__call__(request)


def test_a_413_the_limits_did_not_foresee_is_split_in_halves_in_order() -> None:
    service = Budget(most=3, reported=limits(texts=256))
    texts = [f"t{i}" for i in range(10)]
    result = fake_client(service).explain(texts)
    assert [e.label for e in result.explanations] == texts
    answered = [chunk for chunk in service.posts() if len(chunk) <= 3]
    assert [t for chunk in answered for t in chunk] == texts
    assert [len(c) for c in service.posts()] == [10, 5, 2, 3, 5, 2, 3]


def test_a_server_without_limits_gets_halves_after_its_413() -> None:
    service = Budget(most=4, reported=None)
    texts = [f"t{i}" for i in range(9)]
    assert [p.label for p in fake_client(service).predict(texts).predictions] == texts


def test_a_lone_text_over_the_budget_is_raised() -> None:
    service = Budget(most=0, reported=limits())
    with pytest.raises(SentimentError) as caught:
        fake_client(service).predict(["a", "b"])
    assert caught.value.status_code == 413 and caught.value.message == "would not fit the deadline"


def test_an_error_in_a_later_part_names_the_index_in_the_whole_list() -> None:
    service = Budget(most=1000, reported=limits(texts=4))
    texts = ["ok"] * 6 + [" "] + ["ok"]
    with pytest.raises(SentimentError) as caught:
        fake_client(service).predict(texts)
    assert caught.value.status_code == 422 and caught.value.message == "texts.6: must not be blank"


def test_a_text_over_the_character_limit_is_refused_before_anything_is_sent() -> None:
    service = FakeService({**limits(), "max_text_chars": 10})
    with pytest.raises(SentimentError) as caught:
        fake_client(service).predict(["short", "x" * 11])
    assert caught.value.status_code == 413 and caught.value.message.startswith("texts.1 has 11 characters")
    assert service.posts() == []


@pytest.mark.parametrize(
    "error",
    [
        lambda r: httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=r),
        lambda r: httpx.DecodingError("gzip: invalid data", request=r),
    ],
)
def test_request_errors_that_are_not_transport_errors_are_wrapped_not_retried(error) -> None:  # type: ignore[no-untyped-def]
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise error(request)

    waits: list[float] = []
    api = SentimentClient("http://svc", transport=httpx.MockTransport(handle), sleep=waits.append)
    with pytest.raises(SentimentError) as caught:
        api.predict("hi")
    assert caught.value.status_code is None and "no usable answer from http://svc" in caught.value.message
    assert isinstance(caught.value.__cause__, httpx.RequestError) and len(seen) == 1 and waits == []


def test_an_answer_that_is_not_json_is_a_sentiment_error() -> None:
    html = httpx.Response(200, text="<html>proxy login</html>", headers={"content-type": "text/html"})
    api = SentimentClient("http://svc", transport=httpx.MockTransport(lambda r: html))
    with pytest.raises(SentimentError, match=r"not JSON \(text/html\)"):
        api.model_info()


def test_async_client_resplits_too() -> None:
    service = Budget(most=2, reported=limits())

    async def run() -> list[str]:
        transport = httpx.MockTransport(service)
        async with AsyncSentimentClient("http://svc", transport=transport, retry=RetryPolicy()) as api:
            return [p.label for p in (await api.predict(["a", "b", "c", "d", "e"])).predictions]

    assert asyncio.run(run()) == ["a", "b", "c", "d", "e"]


def test_explain_against_the_app_is_split_to_fit_its_deadline(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real /explain refuses 8 long texts (413: past half the deadline at 100 token steps/s);
    the client sends them in parts the server takes."""
    monkeypatch.setattr(explain_routes, "throughput", lambda predictor: 100.0)
    long = "great movie , really great acting " * 4  # 16 tokens: 17 rows x 16 steps each
    texts = [f"{long} {i}" for i in range(8)]
    with TestClient(create_app(settings)) as app_client:
        api = SentimentClient(http_client=app_client)
        result = api.explain(texts)
        direct = [app_client.post("/explain", json={"texts": [t]}).json() for t in texts[:2]]
    assert len(result.explanations) == 8
    assert [e.score for e in result.explanations[:2]] == [d["explanations"][0]["score"] for d in direct]
