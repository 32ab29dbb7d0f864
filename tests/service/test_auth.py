"""Optional API keys: Bearer or X-API-Key, 401 otherwise, health open, admin always behind a key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.admission import AmbiguousKey, key_is_valid, load_keys, presented_key
from service.app import create_app
from service.settings import Settings

KEYS = "first-key-0123456789,second-key-abcdef"
TEXTS = {"texts": ["i love it"]}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    keyed = Settings(**{**settings.model_dump(), "api_keys": KEYS, "_env_file": None})  # type: ignore[arg-type]
    with TestClient(create_app(keyed)) as c:
        yield c


def test_without_a_valid_key_the_api_answers_401_with_a_challenge(client: TestClient) -> None:
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic x"},
    ):
        r = client.post("/predict", json=TEXTS, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == 'Bearer realm="sentiment"'
        assert "API key" in r.json()["detail"]
    assert client.get("/v1/model").status_code == 401


def test_either_header_and_any_configured_key_is_accepted(client: TestClient) -> None:
    first, second = KEYS.split(",")
    for headers in (
        {"Authorization": f"Bearer {first}"},
        {"X-API-Key": second},
        {"authorization": f"bearer {second}"},
    ):
        assert client.post("/predict", json=TEXTS, headers=headers).status_code == 200, headers


def test_health_metrics_and_docs_stay_open(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_admin_needs_a_key_and_is_disabled_without_any(client: TestClient, settings: Settings) -> None:
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": KEYS.split(",")[0]}).status_code == 200
    with TestClient(create_app(settings)) as open_client:  # no keys: the API is open, admin is not
        assert open_client.post("/predict", json=TEXTS).status_code == 200
        r = open_client.post("/admin/reload", headers={"X-API-Key": "anything"})
    assert r.status_code == 403
    assert "SENTIMENT_API_KEYS" in r.json()["detail"]


def test_keys_come_from_a_file_too(settings: Settings, tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text("# ops team\nfile-key-1\n\n  file-key-2  \n")
    both = Settings(
        **{**settings.model_dump(), "api_keys": "env-key", "api_keys_file": file, "_env_file": None}
    )
    assert load_keys(both) == (b"env-key", b"file-key-1", b"file-key-2")
    file.write_text("# nothing but a comment\n")
    with pytest.raises(ValueError, match="has no keys"):
        load_keys(both)
    with pytest.raises(ValueError, match="does not exist"):
        Settings(**{**settings.model_dump(), "api_keys_file": tmp_path / "nope", "_env_file": None})


def test_keys_are_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    first, second = KEYS.split(",")
    with caplog.at_level(logging.DEBUG):
        client.post("/predict", json=TEXTS, headers={"Authorization": f"Bearer {first}"})
        client.post("/predict", json=TEXTS, headers={"X-API-Key": "wrong-" + second})
        client.post("/admin/reload", headers={"X-API-Key": second})
        logging.getLogger("test").info("settings: %s", client.app.state.settings)  # type: ignore[attr-defined]
    assert caplog.records
    assert first not in caplog.text and second not in caplog.text
    assert first not in repr(client.app.state.settings)  # type: ignore[attr-defined]


def test_header_parsing_and_comparison() -> None:
    keys = (b"k1", b"k2")
    assert presented_key([(b"authorization", b"Bearer  k1 ")]) == b"k1"
    assert presented_key([(b"authorization", b"Basic k1")]) is None
    assert presented_key([(b"x-api-key", b"k2")]) == b"k2"
    assert presented_key([(b"authorization", b"Basic x"), (b"x-api-key", b"k2")]) == b"k2"
    for twice in ([(b"x-api-key", b"k1")] * 2, [(b"authorization", b"Basic x")] * 2):
        with pytest.raises(AmbiguousKey, match="more than one credential"):
            presented_key(twice)
    assert key_is_valid(b"k2", keys) and not key_is_valid(b"k", keys) and not key_is_valid(None, keys)


def test_the_openapi_schema_documents_the_keys(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert {"401", "403"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_more_than_one_credential_is_refused_whichever_comes_first(client: TestClient) -> None:
    first, second = KEYS.split(",")
    for headers in (
        [("X-API-Key", "wrong"), ("X-API-Key", first)],  # judged by the first only, before
        [("X-API-Key", first), ("X-API-Key", "wrong")],
        [("X-API-Key", first), ("X-API-Key", first)],
        [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {first}")],
        [("Authorization", "Basic x"), ("Authorization", f"Bearer {first}")],
        [("X-API-Key", "wrong"), ("Authorization", f"Bearer {second}")],
        [("Authorization", f"Bearer {second}"), ("X-API-Key", "wrong")],
    ):
        r = client.post("/predict", json=TEXTS, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == 'Bearer realm="sentiment", error="invalid_request"'
        assert r.json()["detail"].startswith("more than one credential in the request (")
        assert "send exactly one" in r.json()["detail"]
        assert first not in r.text and second not in r.text
    r = client.post("/admin/reload", headers=[("X-API-Key", "wrong"), ("X-API-Key", second)])
    assert r.status_code == 401 and "more than one credential" in r.json()["detail"]
    # One key plus an Authorization of another scheme (a proxy's Basic credentials) is one key.
    ok = client.post("/predict", json=TEXTS, headers=[("Authorization", "Basic x"), ("X-API-Key", first)])
    assert ok.status_code == 200
    assert client.get("/healthz", headers=[("X-API-Key", "a"), ("X-API-Key", "b")]).status_code == 200


def test_an_open_api_ignores_credentials_however_many(settings: Settings) -> None:
    with TestClient(create_app(settings)) as open_client:
        r = open_client.post("/predict", json=TEXTS, headers=[("X-API-Key", "a"), ("X-API-Key", "b")])
    assert r.status_code == 200
