"""Prometheus metrics, served at ``/metrics``.

Each app has its own registry (tests build many apps in one process; the global registry would
refuse the second). Queue depth is read from the engine at scrape time, so the hot path pays nothing
for it; batch size and inference time come from the engine's ``on_batch`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from model.predictor import Prediction

# Latency buckets around a tiny CPU model's milliseconds up to the default 30 s deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# The status label of a request that got no response (the client left, or the server refused the
# request itself while parsing it and answered without the app).
NO_RESPONSE = "none"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """Every metric of one app, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sentiment_http_requests",
            "HTTP requests, by the status sent (none: no response)",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sentiment_http_request_duration_seconds",
            "time from request to the end of the response",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("sentiment_queue_depth_texts", "texts waiting for a batch", registry=r)
        self.queue_capacity = Gauge("sentiment_queue_capacity_texts", "texts the queue holds", registry=r)
        self.batch_size = Histogram(
            "sentiment_batch_size_texts", "texts per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "sentiment_inference_seconds",
            "time of one batch's forward pass",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "sentiment_predictions", "predictions returned, by label", ["label"], registry=r
        )
        self.model = Gauge(
            "sentiment_model_info", "the served model (value 1)", ["name", "version"], registry=r
        )
        self.reloads = Counter(
            "sentiment_model_reloads", "model reloads, by outcome", ["outcome"], registry=r
        )
        self.restarts = Counter(
            "sentiment_model_process_restarts",
            "starts of the model process after it was lost, by outcome",
            ["outcome"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int | None], tuple[Counter, Histogram]] = {}
        self._prediction_children: dict[str, Counter] = {}

    def watch_queue(self, queued: Callable[[], int], capacity: Callable[[], int]) -> None:
        self.queue_depth.set_function(queued)
        self.queue_capacity.set_function(capacity)

    def on_restart(self, outcome: str) -> None:
        self.restarts.labels(outcome).inc()

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def on_predictions(self, predictions: Sequence[Prediction]) -> None:
        counts: dict[str, int] = {}
        for p in predictions:
            counts[p.label] = counts.get(p.label, 0) + 1
        for label, n in counts.items():
            child = self._prediction_children.get(label)
            if child is None:
                child = self._prediction_children[label] = self.predictions.labels(label)
            child.inc(n)

    def on_request(self, method: str, route: str, status: int | None, seconds: float) -> None:
        """One request, by the status actually sent (``None``: no response, counted as ``"none"``)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # first request of its kind: look the labelled series up once
            code = NO_RESPONSE if status is None else str(status)
            children = self.requests.labels(method, route, code), self.latency.labels(method, route, code)
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_model(self, name: str, version: str) -> None:
        self.model.clear()
        self.model.labels(name, version).set(1)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the service's metrics."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
