"""The HTTP API in process: predictions, health, model information, docs and request validation."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from model.predictor import Predictor
from service.app import GC_THRESHOLD, create_app
from service.runners import ProcessRunner
from service.settings import Settings
from tests.conftest import LABELS

TEXTS = [
    "this is the worst , i hate it and the food was awful",
    "love",
    "the meeting is at noon today",
    "great movie",
    "never seen words",
]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:  # the lifespan loads the model
        yield client


def message(response) -> str:  # type: ignore[no-untyped-def]
    """The readable sentence of an error answer."""
    body = response.json()
    assert isinstance(body["detail"], str), body  # one shape for every error
    return str(body["detail"])


@pytest.mark.parametrize(
    ("batching", "model_process", "torchscript"),
    [
        (True, True, True),
        (True, False, True),
        (True, False, False),
        (False, False, True),
        (False, False, False),
    ],
)
def test_predict_answers_in_input_order(
    settings: Settings, predictor: Predictor, batching: bool, model_process: bool, torchscript: bool
) -> None:
    update = {"batching": batching, "model_process": model_process, "torchscript": torchscript}
    app = create_app(settings.model_copy(update=update))
    with TestClient(app) as client:
        response = client.post("/predict", json={"texts": TEXTS})
        assert isinstance(app.state.served.engine.runner, ProcessRunner) is model_process
        if not model_process:
            assert app.state.served.engine.runner.predictor.scripted is torchscript
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = predictor.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    for got, want in zip(predictions, expected, strict=True):
        assert set(got) == {"label", "score", "probabilities", "truncated"}
        assert got["label"] == want.label
        assert got["score"] == pytest.approx(want.score, abs=1e-6)
        assert list(got["probabilities"]) == LABELS
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)
        assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert got["truncated"] is False


def test_predict_names_the_model(client: TestClient, predictor: Predictor) -> None:
    model = client.post("/predict", json={"texts": ["love"]}).json()["model"]
    assert model == {"name": "tiny", "version": predictor.checkpoint.version}
    assert len(model["version"]) == 12


def test_model_name_from_settings_and_by_default_not_the_directory(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"model_name": "sentiment-v2"}))) as client:
        assert client.post("/predict", json={"texts": ["love"]}).json()["model"]["name"] == "sentiment-v2"
    default = Settings(_env_file=None, checkpoint=settings.checkpoint)  # type: ignore[call-arg]
    assert default.model_name == "sentiment" != settings.checkpoint.name


def test_a_single_string_is_one_text(client: TestClient) -> None:
    one = client.post("/predict", json={"texts": "love"}).json()
    assert one["predictions"] == client.post("/predict", json={"texts": ["love"]}).json()["predictions"]


@pytest.mark.parametrize("enabled", [False, True])
def test_opentelemetry_providers_are_looked_up_only_when_enabled(
    settings: Settings, enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import trace

    lookups = 0
    get_provider = trace.get_tracer_provider

    def counting() -> trace.TracerProvider:
        nonlocal lookups
        lookups += 1
        return get_provider()

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    with TestClient(create_app(settings.model_copy(update={"opentelemetry": enabled}))) as client:
        lookups = 0
        for _ in range(3):
            assert client.post("/predict", json={"texts": ["love"]}).status_code == 200
    assert (lookups >= 3) if enabled else (lookups == 0)


def test_a_text_over_the_model_length_is_read_whole_not_truncated(client: TestClient) -> None:
    # 40 words, the tiny model reads 16 tokens: read in overlapping windows (tests/service/test_sentences.py)
    response = client.post("/predict", json={"texts": ["great " * 40, "great"]})
    predictions = response.json()["predictions"]
    assert [p["truncated"] for p in predictions] == [False, False]
    assert set(predictions[0]) == {"label", "score", "probabilities", "truncated"}  # shape unchanged


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_healthz_fails_once_the_model_has_been_down_too_long(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings.model_copy(update={"liveness_unavailable_s": 60}))
    with TestClient(app) as client:
        engine = app.state.served.engine
        engine.unavailable_since = time.monotonic() - 30  # restarting, not for long: alive
        assert client.get("/healthz").status_code == 200
        engine.unavailable_since = time.monotonic() - 90  # past the limit: replace me
        response = client.get("/healthz")
        assert response.status_code == 503 and "no model for over 60 s" in message(response)


def test_readyz_when_loaded(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_not_ready_without_a_model(client: TestClient) -> None:
    app = client.app
    served, app.state.served = app.state.served, None  # type: ignore[attr-defined]
    try:
        assert client.get("/readyz").status_code == 503
        response = client.post("/predict", json={"texts": ["love"]})
        assert response.status_code == 503 and "not loaded" in message(response)
        assert client.get("/healthz").status_code == 200  # alive all the same
    finally:
        app.state.served = served  # type: ignore[attr-defined]


def test_model_loads_in_the_lifespan_not_at_creation(settings: Settings) -> None:
    app = create_app(settings)
    assert app.state.served is None
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
    assert app.state.served is None  # unloaded at shutdown


def test_the_server_collects_its_youngest_generation_seldom(settings: Settings) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700)  # Python's default
    try:
        with TestClient(create_app(settings)):
            assert gc.get_threshold()[0] == GC_THRESHOLD
    finally:
        gc.set_threshold(*before)


def test_model_info(client: TestClient, predictor: Predictor) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    info = response.json()
    checkpoint = predictor.checkpoint
    assert info["name"] == "tiny" and info["version"] == checkpoint.version
    assert info["labels"] == LABELS
    assert info["config"] == checkpoint.config.to_dict()
    assert info["temperature"] == checkpoint.temperature
    assert info["metrics"] == {"test": {"accuracy": 0.5}}
    assert info["provenance"] == {"seed": 0}
    assert info["training"] == {"epochs": 0}
    assert set(info["limits"]) == {
        "max_texts_per_request",
        "max_text_chars",
        "max_body_bytes",
        "max_sentences_per_request",
    }
    assert all(isinstance(v, int) and v > 0 for v in info["limits"].values())


def test_docs_and_openapi(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    for path in ("/predict", "/healthz", "/readyz", "/v1/model"):
        assert path in schema["paths"], path
    assert schema["paths"]["/predict"]["post"]["description"]  # one-line docstrings feed the docs


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({}, "texts", "Field required"),
        ({"texts": 12}, "texts", "valid array"),
        ({"texts": [1, 2]}, "texts.0", "valid string"),
        ({"texts": None}, "texts", "valid array"),
        ({"texts": []}, "texts", "at least 1 item"),
        ({"texts": ["fine", ""]}, "texts.1", "must contain a non-whitespace character"),
        ({"texts": ["fine", " \t\n "]}, "texts.1", "must contain a non-whitespace character"),
        ({"texts": ["fine"], "temperature": 2}, "temperature", "Extra inputs are not permitted"),
        ([{"texts": ["fine"]}], "body", "an object"),
    ],
    ids=[
        "missing",
        "number",
        "numbers",
        "null",
        "empty-list",
        "empty-string",
        "whitespace",
        "extra",
        "array",
    ],
)
def test_invalid_requests_get_422_saying_what_to_fix(
    client: TestClient, body: object, where: str, says: str
) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["detail"].startswith(f"{where}: "), payload["detail"]
    assert says in payload["detail"]
    assert payload["errors"][0]["loc"][0] == "body"  # the per-field list, for programs


def test_too_many_texts_get_413(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_texts_per_request": 2}))) as client:
        assert client.post("/predict", json={"texts": ["a", "b"]}).status_code == 200
        response = client.post("/predict", json={"texts": ["a", "b", "c"]})
    assert response.status_code == 413
    assert "3 texts in one request; the limit is 2" in message(response)


def test_too_long_a_text_gets_413(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_text_chars": 10}))) as client:
        assert client.post("/predict", json={"texts": ["x" * 10]}).status_code == 200
        response = client.post("/predict", json={"texts": ["ok", "x" * 11]})
    assert response.status_code == 413
    assert "texts.1 has 11 characters; the limit is 10" in message(response)


def test_a_body_that_is_not_json_gets_422(client: TestClient) -> None:
    response = client.post("/predict", content=b"texts=hello", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in message(response)


def test_a_wrong_method_or_path_says_what_to_use(client: TestClient) -> None:
    response = client.get("/predict")
    assert response.status_code == 405 and message(response) == "GET is not allowed on /predict; use POST"
    missing = client.get("/nope")
    assert missing.status_code == 404 and "/docs" in message(missing)


def test_cors_is_off_by_default_and_allows_the_configured_origins(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(settings)) as client:
        assert "access-control-allow-origin" not in client.options("/predict", headers=preflight).headers
    allowed = settings.model_copy(update={"cors_origins": ["https://app.example.com"]})
    with TestClient(create_app(allowed)) as client:
        answer = client.options("/predict", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
        other = client.post("/predict", json={"texts": ["love"]}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    monkeypatch.setenv("SENTIMENT_CORS_ORIGINS", "https://a.example, https://b.example")
    from_env = Settings(_env_file=None, checkpoint=settings.checkpoint)  # type: ignore[call-arg]
    assert from_env.cors_origins == ["https://a.example", "https://b.example"]
