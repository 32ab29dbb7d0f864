"""Access logs and HTTP metrics record the status actually sent, or "no response" when none was."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from service.app import create_app
from service.metrics import Metrics
from service.observability import RequestContextMiddleware
from service.settings import Settings
from tests.service.live_server import live_server
from tests.service.test_metrics import _sample

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/predict", "headers": []}


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _read_then_give_up(scope: Scope, receive: Receive, send: Send) -> None:
    """What the body-limit middleware does when the client goes away mid-body: return, answer nothing."""
    while (await receive())["type"] == "http.request":
        pass


async def _raise(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("bug")


async def _cancelled(scope: Scope, receive: Receive, send: Send) -> None:
    raise asyncio.CancelledError


def _run(app: Any, incoming: list[Message]) -> tuple[Metrics, list[Message]]:
    metrics = Metrics()
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def go() -> None:
        await RequestContextMiddleware(app, metrics, access_log=True)(dict(SCOPE), receive, send)

    with contextlib.suppress(RuntimeError, asyncio.CancelledError):
        asyncio.run(go())
    return metrics, sent


def _counted(metrics: Metrics) -> dict[str, float]:
    text = "\n".join(
        f"{s.labels['status']} {s.value}"
        for family in metrics.registry.collect()
        if family.name == "sentiment_http_requests"
        for s in family.samples
        if s.name.endswith("_total")
    )
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()}


@pytest.mark.parametrize(
    ("app", "incoming", "expected"),
    [
        (_answer, [], "201"),
        # The client left mid-body: nothing was sent, and nothing will be.
        (_read_then_give_up, [{"type": "http.request", "body": b"{", "more_body": True}], "none"),
        # Raised before answering, client still there: the error middleware outside answers 500.
        (_raise, [], "500"),
        # Cancelled (the server gave up on the request): nothing sent.
        (_cancelled, [], "none"),
    ],
)
def test_the_status_recorded_is_the_one_sent(app: Any, incoming: list[Message], expected: str) -> None:
    metrics, _ = _run(app, incoming)
    assert _counted(metrics) == {expected: 1.0}


def test_no_response_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "service.access"):
        _run(_read_then_give_up, [{"type": "http.request", "body": b"{", "more_body": True}])
    (record,) = [r for r in caplog.records if r.name == "service.access"]
    assert record.getMessage().startswith("POST /predict no response ")
    assert record.status is None and record.levelno == logging.WARNING  # type: ignore[attr-defined]


def test_a_chunked_body_abandoned_by_the_client_is_not_a_500(settings: Settings) -> None:
    """Through the whole app: a chunked body whose client disconnects before its end."""
    app = create_app(settings)
    incoming: list[Message] = [{"type": "http.request", "body": b'{"texts": [', "more_body": True}]
    sent: list[Message] = []
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    scope = {**SCOPE, "headers": headers, "query_string": b"", "http_version": "1.1", "scheme": "http"}

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def go() -> str:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                return (await client.get("/metrics")).text

    metrics = asyncio.run(go())
    assert sent == []
    assert _sample(metrics, "sentiment_http_requests_total", route="/predict", status="none") == 1
    assert 'status="500"' not in metrics


@pytest.mark.slow
def test_a_request_uvicorn_refuses_itself_is_not_a_500(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """``Transfer-Encoding: xchunked``: uvicorn answers 400 itself; the app sent nothing."""
    with live_server(tiny_checkpoint, tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            assert raw.recv(4096).startswith(b"HTTP/1.1 400 ")
        deadline = time.monotonic() + 5
        while "no response" not in server.log and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert 'status="500"' not in metrics and "POST /predict 500" not in server.log
    assert _sample(metrics, "sentiment_http_requests_total", route="/predict", status="none") == 1
    assert "POST /predict no response" in server.log
