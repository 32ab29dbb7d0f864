"""Request ids, access logs and HTTP metrics, in one pure ASGI middleware; and the logging set-up.

Every request gets an id: the client's ``X-Request-ID`` when it is a sane token, else a fresh one (32
hex digits: a random prefix drawn once per app, then a counter). It is echoed in the response header
and attached to every log record written while the request is handled (``%(request_id)s`` in text
logs, ``"request_id"`` in JSON logs).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

request_id: ContextVar[str] = ContextVar("request_id", default="-")
access = logging.getLogger("service.access")
_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# LogRecord attributes that are not extra fields given by the caller.
NO_RESPONSE = "no response"  # in the access log, where a status would be
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "color_message"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any ``extra`` fields."""

    converter = time.gmtime  # type: ignore[assignment]  # UTC: the time ends in Z

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Route every logger (uvicorn's too) through one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def route_of(scope: Scope) -> str:
    """The route template (``/predict``), never the raw path, so metrics keep few label values."""
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        return str(route)
    # Answered before routing (401, 413, 415): name the documented route the request was meant for.
    app = scope.get("app")
    if app is None:
        return "unmatched"
    if getattr(app.state, "route_patterns", None) is None:
        app.state.route_patterns = _route_patterns(app.openapi().get("paths", {}))
    for template, pattern in app.state.route_patterns:
        if pattern.fullmatch(scope["path"]):
            return template
    return "unmatched"


def _route_patterns(paths: dict[str, Any]) -> list[tuple[str, re.Pattern[str]]]:
    def pattern(template: str) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", template)
        regex = "".join(
            (".+" if p.endswith(":path}") else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts
        )
        return re.compile(regex)

    return [(t, pattern(t)) for t in paths]


class RequestContextMiddleware:
    """Outermost layer: request id in and out, one access-log line and the HTTP metrics per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # Fresh ids without a system call per request: os.urandom (uuid4) releases the GIL, and the
        # event loop then waits for the inference thread to hand it back (docs/serving-performance.md).
        prefix = os.urandom(8).hex()
        self._ids = (f"{prefix}{n:016x}" for n in itertools.count())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _incoming_id(scope["headers"]) or next(self._ids)
        token = request_id.set(rid)
        status: int | None = None  # None: nothing was sent
        gone = False  # the client left (or the server dropped the connection): nothing more can be sent
        start = time.perf_counter()

        async def receive_watched() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        cancelled = True  # until the app returns or raises an Exception
        try:
            await self.app(scope, receive_watched, send_with_id)
            cancelled = False
        except Exception:
            cancelled = False
            raise
        finally:
            # Without an answer of its own, an app that raised or returned gets a 500 from the layers
            # outside (Starlette's error middleware, uvicorn) only while the client is still there. A
            # cancelled request, or one the server refused mid-parse (it answers 400 itself and drops
            # the connection), has nothing sent on its behalf: "no response", not a made-up 500.
            if status is None and not gone and not cancelled:
                status = 500
            self._record(scope, status, time.perf_counter() - start)
            request_id.reset(token)

    def _record(self, scope: Scope, status: int | None, seconds: float) -> None:
        route = route_of(scope)
        self.metrics.on_request(scope["method"], route, status, seconds)
        level = logging.INFO if status is not None else logging.WARNING
        if self.access_log and access.isEnabledFor(level):  # the line's fields are built only if written
            access.log(
                level,
                "%s %s %s %.1f ms",
                scope["method"],
                scope["path"],
                status if status is not None else NO_RESPONSE,
                seconds * 1000,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,  # null in JSON logs: no response was sent
                    "duration_ms": round(seconds * 1000, 2),
                },
            )


def _incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"x-request-id" and _VALID_ID.fullmatch(value):
            return value.decode("ascii")
    return None
