"""/predict's fast path answers exactly as the FastAPI route does, and leaves everything else to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service import observability, routes
from service.app import create_app
from service.settings import Settings

TEXTS = ["this is the worst , i hate it", "love", "the meeting is at noon today", "great movie " * 20]
JSON = {"content-type": "application/json"}
# Not plain application/json: FastAPI still parses it as JSON, but the fast path hands it over.
VIA_ROUTE = {"content-type": "application/vnd.sentiment+json"}


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per request that reached the FastAPI route (it checks the limits; the fast path does not)."""
    calls: list[int] = []
    check = routes.check_limits

    def counted(texts, settings):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        check(texts, settings)

    monkeypatch.setattr(routes, "check_limits", counted)
    return calls


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_texts_per_request": 8}))) as c:
        yield c


def _without_request_id(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k != "x-request-id"]


@pytest.mark.parametrize("texts", [TEXTS[:1], TEXTS, TEXTS[::-1] * 2])
def test_same_bytes_and_headers_as_the_route(client: TestClient, routed: list[int], texts: list[str]) -> None:
    body = routes.PredictRequest(texts=texts).model_dump_json().encode()
    fast = client.post("/predict", content=body, headers=JSON)
    assert routed == []  # the fast path answered
    slow = client.post("/predict", content=body, headers=VIA_ROUTE)
    assert routed == [len(texts)]  # the route answered
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert _without_request_id(fast.headers) == _without_request_id(slow.headers)
    assert fast.headers["x-request-id"] != slow.headers["x-request-id"]


def test_a_body_in_chunks(client: TestClient, routed: list[int]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["i lo'
        yield b've it"]}'

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    assert routed == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"texts": []}', 422),
        (b'{"texts": ["a"], "extra": 1}', 422),
        (b'{"texts": [', 422),
        (b'\xef\xbb\xbf{"texts": ["love"]}', 200),  # a UTF-8 BOM: json.loads takes it, the fast path not
        (b'{"texts": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', 413),
    ],
)
def test_anything_else_goes_to_the_route(
    client: TestClient, routed: list[int], body: bytes, status: int
) -> None:
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == status, response.text
    if status == 422:
        assert routed == [] and set(response.json()) == {"message", "detail"}  # validation failed there
    else:
        assert len(routed) == 1


def test_metrics_name_the_route(client: TestClient) -> None:
    client.post("/predict", json={"texts": ["love"]})
    metrics = client.get("/metrics").text
    assert 'sentiment_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in metrics
    assert 'sentiment_predictions_total{label="' in metrics


def test_the_route_is_in_the_scope(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path names FastAPI's route, as the router would (metrics skip matching the path)."""
    seen = []
    route_of = observability.route_of

    def spy(scope):  # type: ignore[no-untyped-def]
        seen.append(scope.get("route"))
        return route_of(scope)

    monkeypatch.setattr(observability, "route_of", spy)
    client.post("/predict", json={"texts": ["love"]})
    assert isinstance(seen[0], APIRoute) and seen[0].path == "/predict" and seen[0].methods == {"POST"}
