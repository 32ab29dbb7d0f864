"""/predict with sentences, long texts read whole, and per-text errors: through the batching engine."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from client import SentimentClient
from model.predictor import Predictor, aggregate, is_mixed
from model.sentences import plan
from service.app import create_app
from service.settings import Settings
from tests.conftest import LABELS

JSON = {"content-type": "application/json"}
TEXT = "I love this , it is wonderful 😍. The food was awful!\r\nCafe\u0301 at noon today"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def expected(predictor: Predictor, text: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The document's and each sentence's probabilities, computed without the service."""
    max_words = predictor.checkpoint.config.max_length * 3 // 4
    sentences = []
    for pieces in plan(text, max_words):
        probs, _ = predictor.predict_proba([text[a:b] for a, b in pieces])
        sentences.append(aggregate(probs, [b - a for a, b in pieces]))
    return aggregate(np.array(sentences), [1] * len(sentences)), sentences


def test_sentences_have_exact_spans_and_their_predictions(client: TestClient, predictor: Predictor) -> None:
    r = client.post("/predict", json={"texts": [TEXT, "great movie"], "sentences": True})
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    spans = [(s["start"], s["end"]) for s in first["sentences"]]
    assert [TEXT[a:b] for a, b in spans] == [
        "I love this , it is wonderful 😍.",
        "The food was awful!",
        "Cafe\u0301 at noon today",
    ]
    document, sentences = expected(predictor, TEXT)
    for got, want in zip(first["sentences"], sentences, strict=True):
        assert list(got["probabilities"]) == LABELS
        assert [got["probabilities"][k] for k in LABELS] == pytest.approx(want.tolist(), abs=1e-5)
        assert got["label"] == LABELS[int(want.argmax())]
    assert [first["probabilities"][k] for k in LABELS] == pytest.approx(document.tolist(), abs=1e-5)
    assert first["mixed"] is is_mixed(LABELS, np.array(sentences), [1] * 3)
    assert first["truncated"] is False
    assert [(s["start"], s["end"]) for s in second["sentences"]] == [(0, 11)]
    assert second["mixed"] is False


def test_all_sentences_of_a_request_go_through_the_engine_in_one_submit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = client.app.state.served.engine  # type: ignore[attr-defined]
    calls: list[int] = []
    submit = engine.submit

    async def counting(texts):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return await submit(texts)

    monkeypatch.setattr(engine, "submit", counting)
    texts = ["Good. Bad. Fine.", "One.", "great " * 40]  # 3 + 1 + 5 windows of 12 words, 3 overlapping
    r = client.post("/predict", json={"texts": texts, "sentences": True})
    assert r.status_code == 200 and calls == [9]
    assert [len(p["sentences"]) for p in r.json()["predictions"]] == [3, 1, 1]


def test_a_long_text_is_read_whole_as_the_mean_of_its_sentences(
    client: TestClient, predictor: Predictor
) -> None:
    long = "great movie , really great acting . " * 6 + "this is the worst , i hate it . " * 6
    assert predictor.predict([long])[0].truncated  # the tiny model reads 16 tokens
    document, _ = expected(predictor, long)
    whole = client.post("/predict", json={"texts": [long, "love"]}).json()["predictions"]
    by_sentence = client.post("/predict", json={"texts": [long], "sentences": True}).json()["predictions"]
    assert [whole[0]["probabilities"][k] for k in LABELS] == pytest.approx(document.tolist(), abs=1e-5)
    assert whole[0]["truncated"] is False and "sentences" not in whole[0]
    assert by_sentence[0]["probabilities"] == pytest.approx(whole[0]["probabilities"], abs=1e-6)
    assert len(by_sentence[0]["sentences"]) == 12
    assert whole[1]["probabilities"] == pytest.approx(predictor.predict(["love"])[0].probabilities, abs=1e-6)


def test_hugging_face_route_reads_a_long_text_whole_too(client: TestClient, predictor: Predictor) -> None:
    long = "great movie , really great acting . " * 6 + "this is the worst , i hate it . " * 6
    document, _ = expected(predictor, long)
    r = client.post("/models/tiny", json={"inputs": long})
    scores = {item["label"]: item["score"] for item in r.json()[0]}
    assert [scores[k] for k in LABELS] == pytest.approx(document.tolist(), abs=1e-5)


def test_per_text_errors_answer_for_the_others(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_text_chars": 50}))) as client:
        # (a lone surrogate never gets this far: pydantic's JSON parser refuses it, 422 for the request)
        texts = '["love", " \\t", "' + "x" * 51 + '", "", "great movie"]'
        r = client.post(
            "/predict", content=f'{{"texts": {texts}, "errors": "per_text", "sentences": true}}', headers=JSON
        )
        default = client.post("/predict", content=f'{{"texts": {texts}}}', headers=JSON)
        fine = client.post("/predict", json={"texts": ["love"], "errors": "per_text"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p is None for p in body["predictions"]] == [False, True, True, True, False]
    assert [(e["index"], e["status"]) for e in body["errors"]] == [(1, 422), (2, 413), (3, 422)]
    assert body["errors"][1]["detail"].startswith("texts.2 has 51 characters")
    assert body["errors"][0]["detail"] == "texts.1: must contain a non-whitespace character"
    assert body["predictions"][4]["sentences"][0]["end"] == 11
    assert (
        default.status_code == 422
        and default.json()["detail"] == "texts.1: must contain a non-whitespace character"
    )
    assert fine.json()["errors"] == [] and fine.json()["predictions"][0]["label"] in LABELS


def test_per_text_errors_when_every_text_is_bad(client: TestClient) -> None:
    r = client.post("/predict", json={"texts": ["", " "], "errors": "per_text"})
    assert r.status_code == 200
    assert r.json()["predictions"] == [None, None] and len(r.json()["errors"]) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"texts": ["a"], "sentences": "yes"},
        {"texts": ["a"], "errors": "some"},
        {"texts": ["a"], "granularity": "sentence"},
    ],
)
def test_bad_options_are_422(client: TestClient, body: dict) -> None:  # type: ignore[type-arg]
    assert client.post("/predict", json=body).status_code == 422


def test_sentences_need_the_api_key_and_count_in_metrics(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"api_keys": SecretStr("k1")}))) as client:
        denied = client.post("/predict", json={"texts": ["Good. Bad."], "sentences": True})
        ok = client.post(
            "/predict", json={"texts": ["Good. Bad."], "sentences": True}, headers={"X-API-Key": "k1"}
        )
        metrics = client.get("/metrics", headers={"X-API-Key": "k1"}).text
    assert denied.status_code == 401 and ok.status_code == 200
    counted = [line for line in metrics.splitlines() if line.startswith("sentiment_predictions_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == 1  # one document, not 2 sentences


def test_the_python_client_asks_for_sentences_and_per_text_errors(client: TestClient) -> None:
    api = SentimentClient(http_client=client)  # type: ignore[arg-type]
    result = api.predict_documents(["Good. Bad.", " "], per_text_errors=True)
    first = result.documents[0]
    assert first is not None and [(s.start, s.end) for s in first.sentences] == [(0, 5), (6, 10)]
    assert result.documents[1] is None and [(e.index, e.status) for e in result.errors] == [(1, 422)]
    whole = api.predict_documents("Good. Bad.", sentences=False)
    assert whole.documents[0] is not None and whole.documents[0].sentences == [] and whole.errors == []
