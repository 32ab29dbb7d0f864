"""Prometheus metrics at /metrics, request ids in and out, structured (JSON) logs."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.observability import JsonFormatter, RequestIdFilter, configure_logging
from service.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _sample(text: str, metric: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (labels given in any order)."""
    for line in text.splitlines():
        m = re.fullmatch(rf"{metric}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"no sample {metric} {labels}")


def test_metrics_count_requests_batches_predictions_and_the_model(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/predict", json={"texts": ["i love it", "i hate it"]}).status_code == 200
    client.post("/predict", json={"texts": []})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = r.text
    assert _sample(m, "sentiment_http_requests_total", route="/predict", status="200", method="POST") == 3
    assert _sample(m, "sentiment_http_requests_total", route="/predict", status="422") == 1
    assert _sample(m, "sentiment_http_request_duration_seconds_count", route="/predict", status="200") == 3
    assert _sample(m, "sentiment_batch_size_texts_sum") == 6
    assert _sample(m, "sentiment_inference_seconds_count") == _sample(m, "sentiment_batch_size_texts_count")
    by_label = sum(
        _sample(m, "sentiment_predictions_total", label=x)
        for x in ("negative", "neutral", "positive")
        if f'label="{x}"' in m
    )
    assert by_label == 6
    assert _sample(m, "sentiment_queue_depth_texts") == 0
    assert _sample(m, "sentiment_queue_capacity_texts") == 4096
    version = client.get("/v1/model").json()["version"]
    assert _sample(m, "sentiment_model_info", version=version, name="tiny") == 1


def test_unknown_paths_share_one_label(client: TestClient) -> None:
    for i in range(3):
        client.get(f"/no/such/page/{i}")
    m = client.get("/metrics").text
    assert _sample(m, "sentiment_http_requests_total", route="unmatched", status="404") == 3
    assert "/no/such/page" not in m


def test_request_id_is_taken_or_generated_and_echoed(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y"})
    assert given.headers["x-request-id"] == "abc-123.x:y"
    for bad in ("", "has spaces", "x" * 200, "<script>"):
        r = client.get("/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad
    errors = client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    assert re.fullmatch(r"[0-9a-f]{32}", errors.headers["x-request-id"])  # answers from middleware too


def test_json_logs_carry_the_request_id(client: TestClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("service.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        client.post("/predict", json={"texts": ["i love it"]}, headers={"X-Request-ID": "req-42"})
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["request_id"] == "req-42" and entry["logger"] == "service.access"
    assert entry["status"] == 200 and entry["path"] == "/predict" and entry["method"] == "POST"
    assert entry["level"] == "info" and entry["duration_ms"] >= 0 and entry["time"].endswith("Z")


def test_configure_logging_routes_every_logger_through_one_format() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", "json")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING and logging.getLogger("uvicorn.error").propagate
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
