"""POST /explain and the demo page at /, in-process on the tiny checkpoint."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

import model.explain as explain_module
from model.explain import explain
from service import explain_routes
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    settings.max_texts_per_request = 3
    settings.max_text_chars = 200
    with TestClient(create_app(settings)) as client:
        yield client


def test_explain_returns_prediction_and_spans(client: TestClient) -> None:
    texts = ["I love this, it is wonderful", "terrible service and awful food @someone"]
    response = client.post("/explain", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "tiny" and "occlusion" in body["method"]
    predictions = client.post("/predict", json={"texts": texts}).json()["predictions"]
    for text, explanation, prediction in zip(texts, body["explanations"], predictions, strict=True):
        assert explanation["label"] == prediction["label"]
        assert explanation["score"] == pytest.approx(prediction["score"], abs=1e-5)
        words = [text[t["start"] : t["end"]] for t in explanation["tokens"]]
        assert words == text.replace(",", " ,").split()
    assert body["explanations"][1]["tokens"][-1]["token"] == "[UNK]"  # <user> is not in the tiny vocab


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"texts": []}, 422),
        ({"texts": ["  "]}, 422),
        ({"text": ["hi"]}, 422),
        ({"texts": ["a", "b", "c", "d"]}, 413),
        ({"texts": ["x" * 201]}, 413),
    ],
)
def test_explain_has_the_limits_of_predict(client: TestClient, body: dict[str, object], status: int) -> None:
    assert client.post("/explain", json=body).status_code == status
    assert client.post("/predict", json=body).status_code == status


def test_demo_page_and_its_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/static/demo.js"' in page.text and 'href="/static/demo.css"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    script = client.get("/static/demo.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert 'fetch("/explain"' in script.text
    assert client.get("/static/demo.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/..%2Fapp.py", "/static/%2E%2E%2Fdemo.py"])
def test_only_the_static_files_are_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_explanations_run_a_few_at_a_time_and_keep_the_deadline(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, most, lock = 0, 0, threading.Lock()

    def slow_explain(predictor, texts, stop):  # type: ignore[no-untyped-def]
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return explain(predictor, texts, stop=stop)

    monkeypatch.setattr(explain_routes, "explain", slow_explain)
    app = create_app(settings)

    async def run() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                answers = await asyncio.gather(
                    *(http.post("/explain", json={"texts": ["i love this"]}) for _ in range(6))
                )
                settings.request_timeout_s = 0.01
                late = await http.post("/explain", json={"texts": ["i love this"]})
        return [a.status_code for a in answers] + [late.status_code]

    assert asyncio.run(run()) == [200] * 6 + [504]
    assert most == explain_routes.SLOTS


def test_explanations_past_their_deadline_stop_and_never_exceed_the_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running, most, stopped = [0], [0], []

    def slow_explain(predictor: object, texts: list[str], stop: threading.Event) -> list[object]:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            while not stop.wait(0.01):  # a long explanation that checks between forward passes
                pass
            stopped.append(texts[0])
            raise explain_module.Stopped
        finally:
            running[0] -= 1

    monkeypatch.setattr(explain_routes, "explain", slow_explain)

    async def scenario() -> None:
        slots = asyncio.Semaphore(explain_routes.SLOTS)
        calls = [explain_routes._explain(slots, None, [f"t{k}"], 0.2) for k in range(4)]  # type: ignore[arg-type]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, TimeoutError) for o in outcomes)
        for _ in range(explain_routes.SLOTS):  # the threads told to stop gave their slots back
            await asyncio.wait_for(slots.acquire(), 1.0)

    asyncio.run(scenario())
    assert most[0] <= explain_routes.SLOTS
    assert len(stopped) == 2  # two ran and were stopped; two never got a slot in time


def test_an_explanation_too_big_for_the_deadline_is_refused_with_413(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(explain_routes, "throughput", lambda predictor: 100.0)  # token steps per second
    settings.request_timeout_s = 30  # 15 s for one explanation: 1,500 token steps at that speed
    long = "great movie , really great acting " * 4  # 16 tokens (the tiny model's max_length)
    with TestClient(create_app(settings)) as client:
        fits = client.post("/explain", json={"texts": [long] * 5})  # 85 rows x 16 = 1,360 steps
        refused = client.post("/explain", json={"texts": [long] * 8})  # 136 rows x 16 = 2,176 steps
    assert fits.status_code == 200 and len(fits.json()["explanations"]) == 5
    assert refused.status_code == 413
    assert refused.json()["detail"] == (
        "this explanation would take about 21.8 s on this model (8 texts, 136 token rows); one /explain "
        "request may take 15 s (0.5 of SENTIMENT_REQUEST_TIMEOUT_S=30): send fewer or shorter texts per "
        "request (about 5 like these fit)"
    )
