"""Bad input gets a clear 4xx, never a 500; limits name themselves; overload and deadlines answer at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from fastapi.testclient import TestClient

from model.predictor import Prediction
from service.app import create_app
from service.settings import Settings

JSON = {"content-type": "application/json"}


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "max_body_bytes": 2048,
            "max_texts_per_request": 4,
            "max_text_chars": 500,
            "request_timeout_s": 5,
        }
    )


@pytest.fixture
def client(limited: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(limited), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b'{"texts": [', JSON, 422, "JSON decode error"),
        (b'{"texts": ["a"]}', {"content-type": "text/plain"}, 415, "Content-Type must be application/json"),
        (b'{"texts": ["a"]}', {"content-type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        (b'{"texts": ["a"]}', {}, 415, "got none"),
        ('{"texts": ["caf\xe9"]}'.encode("latin-1"), JSON, 400, "not valid UTF-8"),
        (b"\xff\xfe\x00", JSON, 400, "not valid UTF-8"),
        (b'{"texts": null}', JSON, 422, "texts: Input should be a valid array"),
        (b'{"texts": [null]}', JSON, 422, "texts.0: Input should be a valid string"),
        (b'{"texts": [1, 2]}', JSON, 422, "texts.0: Input should be a valid string"),
        (b'{"texts": 7}', JSON, 422, "texts: Input should be a valid array"),
        (b'{"texts": [["nested"], {"a": 1}]}', JSON, 422, "texts.0"),
        (b'{"texts": []}', JSON, 422, "texts: List should have at least 1 item"),
        (b'{"texts": [""]}', JSON, 422, "texts.0"),
        (b'{"texts": ["   \\n\\t"]}', JSON, 422, "texts.0: must contain a non-whitespace character"),
        (b'{"texts": ["a"], "extra": 1}', JSON, 422, "extra: Extra inputs are not permitted"),
        (b'["a"]', JSON, 422, "an object"),
        (b"null", JSON, 422, "body"),
        (b"123", JSON, 422, "body"),
        (b'{"texts": ' + b"[" * 1010 + b"]" * 1010 + b"}", JSON, 400, "nested too deeply"),
        (b'{"texts": ["a"]}' * 200, JSON, 413, "limit of 2048 bytes (SENTIMENT_MAX_BODY_BYTES)"),
        (b'{"texts": ["a", "b", "c", "d", "e"]}', JSON, 413, "limit is 4 (SENTIMENT_MAX_TEXTS_PER_REQUEST)"),
        (b'{"texts": ["' + b"a" * 501 + b'"]}', JSON, 413, "limit is 500 (SENTIMENT_MAX_TEXT_CHARS)"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    client: TestClient, body: bytes, headers: dict, status: int, says: str
) -> None:
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()
    assert says in error["detail"]  # one sentence; a 422 adds the per-field "errors"


def test_a_chunked_body_is_cut_off_at_the_limit(client: TestClient) -> None:
    def chunks(n: int) -> Iterator[bytes]:
        yield b'{"texts": ["'
        yield from (b"a" * 100 for _ in range(n))
        yield b'"]}'

    too_big = client.post("/predict", content=chunks(30), headers=JSON)  # no Content-Length: chunked
    assert too_big.status_code == 413
    assert "over the limit of 2048 bytes (SENTIMENT_MAX_BODY_BYTES)" in too_big.json()["detail"]
    fits = client.post("/predict", content=chunks(3), headers=JSON)
    assert fits.status_code == 200 and len(fits.json()["predictions"]) == 1


def test_a_text_longer_than_max_length_is_read_whole(client: TestClient) -> None:
    r = client.post("/predict", json={"texts": ["great movie " * 30, "great movie"]})
    assert r.status_code == 200
    assert [p["truncated"] for p in r.json()["predictions"]] == [False, False]


def test_sentences_per_request_past_the_limit_is_413(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_sentences_per_request": 3})
    with TestClient(create_app(limited)) as client:
        fits = client.post("/predict", json={"texts": ["Good. Bad.", "Fine."], "sentences": True})
        over = client.post("/predict", json={"texts": ["Good. Bad.", "Fine. Okay."], "sentences": True})
        whole = client.post("/predict", json={"texts": ["Good. Bad.", "Fine. Okay."]})  # short: whole
    assert fits.status_code == 200 and whole.status_code == 200
    assert over.status_code == 413
    assert (
        "4 sentences" in over.json()["detail"]
        and "SENTIMENT_MAX_SENTENCES_PER_REQUEST" in over.json()["detail"]
    )


def test_per_text_errors_keep_the_request_limits(client: TestClient, limited: Settings) -> None:
    too_many = ["love"] * (limited.max_texts_per_request + 1)
    r = client.post("/predict", json={"texts": too_many, "errors": "per_text"})
    assert r.status_code == 413


def test_queue_full_gives_503_with_retry_after_and_readiness_turns_false(client: TestClient) -> None:
    engine = client.app.state.served.engine  # type: ignore[attr-defined]
    engine.scheduler.max_queue_texts = 0  # nothing fits: the queue counts as saturated
    predict = client.post("/predict", json={"texts": ["i love it"]})
    ready = client.get("/readyz")
    engine.scheduler.max_queue_texts = 8
    assert predict.status_code == 503 and predict.headers["retry-after"] == "1"
    assert "overloaded" in predict.json()["detail"]
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", json={"texts": ["i love it"]}).status_code == 200


def test_past_the_deadline_gives_504(limited: Settings) -> None:
    async def never(texts: Sequence[str]) -> list[Prediction]:
        await asyncio.sleep(60)
        return []

    app = create_app(limited.model_copy(update={"request_timeout_s": 0.05}))
    with TestClient(app) as client:
        client.app.state.served.engine.submit = never  # type: ignore[attr-defined]
        r = client.post("/predict", json={"texts": ["i love it"]})
    assert r.status_code == 504
    assert "no result within 0.05 s" in r.json()["detail"]
