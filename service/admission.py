"""Admission: what a connection and a request must pass before any route sees it.

- Deadlines and bounds on each connection, in uvicorn's own httptools protocol
  (``GuardedHttpToolsProtocol``), whatever sits in front of the server. uvicorn closes a keep-alive
  connection that stays idle after a response (``timeout_keep_alive``) and bounds concurrent
  connections (``limit_concurrency``), but sets no deadline for a request's head or body and no bound on
  the head's size: a client that sends nothing, or a header a byte a second (slowloris), or megabytes of
  header that never end, would hold a connection and memory for ever.
- An API key, when keys are configured (``SENTIMENT_API_KEYS``, comma-separated, and/or
  ``SENTIMENT_API_KEYS_FILE``, one per line). With none the API is open, except ``/admin/*``, which then
  answers 403: admin endpoints always need a key. A key is sent as ``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY`` (one of them, once: more than one credential header is refused with 401) and
  compared in constant time against every configured key. Keys are never logged.
- A body within ``SENTIMENT_MAX_BODY_BYTES`` and declared as JSON. A body with a ``Content-Length``
  within the limit passes straight through; only one without (chunked) is counted as it arrives, and
  cut off with 413 the moment it passes the limit.

The last two are pure ASGI middleware (no ``BaseHTTPMiddleware``), so that every route, present or
future, is covered and the hot path pays a header scan and nothing else.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import error_response
from service.settings import Settings, get_settings

# Open whatever the keys: probes, scrapers and the API docs.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PATHS |= {"/openapi.json", "/", "/favicon.ico", "/v2/health/live", "/v2/health/ready"}
PUBLIC_PREFIXES = ("/static/",)  # the demo page's assets
ADMIN_PREFIX = "/admin/"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sentiment"'}
INVALID_REQUEST = {"WWW-Authenticate": 'Bearer realm="sentiment", error="invalid_request"'}
_BODY_METHODS = {"POST", "PUT", "PATCH"}
MAX_HEADERS = 100  # header fields in one request head


def _close(transport: asyncio.Transport, status: bytes, message: str) -> None:
    if transport.is_closing():
        return
    body = message.encode()
    transport.write(
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    transport.close()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol, plus a deadline for each request's head and body and a bound on the head.

    One timer per connection, not one per deadline: each request moves the deadline (``_due``), and the
    timer, when it fires early, waits on for the deadline of the moment. A keep-alive connection under
    load then re-arms it every few seconds instead of twice per request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()  # from the environment, in each worker process alike
        self.head_timeout_s, self.body_timeout_s = settings.header_timeout_s, settings.body_timeout_s
        self.max_head_bytes = settings.max_header_bytes
        self._in_head = True  # reading a request's head (or waiting for one to start)
        self._head_bytes = 0
        self._headers = 0
        self._due: float | None = None  # ``loop.time()`` by which what is awaited must have arrived
        self._why = (b"", "")  # the status and message that close the connection at ``_due``
        self._timer: asyncio.TimerHandle | None = None

    def _expect(self, seconds: float, status: bytes, message: str) -> None:
        self._due, self._why = self.loop.time() + seconds, (status, message)
        if self._timer is not None and self._timer.when() > self._due:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(self._due, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._due is None:  # nothing awaited now: the next ``_expect`` arms a timer again
            return
        if self.loop.time() >= self._due:
            _close(self.transport, *self._why)
        else:
            self._timer = self.loop.call_at(self._due, self._check)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect(self.head_timeout_s, b"408 Request Timeout", "no complete request head in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._due is None:  # the next request on a keep-alive connection
            self._expect(self.head_timeout_s, b"408 Request Timeout", "no complete request head in time")
        super().data_received(data)
        if self._in_head:  # the parser holds at most one read of the head beyond the bound
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                _close(self.transport, b"431 Request Header Fields Too Large", "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            _close(self.transport, b"431 Request Header Fields Too Large", "too many header fields")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._expect(self.body_timeout_s, b"408 Request Timeout", "request body not received in time")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._due = None  # the request is the app's now: its own deadline applies
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._in_head, self._head_bytes, self._headers = True, 0, 0
        super().on_response_complete()  # arms uvicorn's keep-alive timeout for the idle wait


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer with FastAPI's error shape, ``{"detail": message}``, without touching the app."""
    body = json.dumps({"detail": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# -- the key ---------------------------------------------------------------------------------------


def load_keys(settings: Settings) -> tuple[bytes, ...]:
    """Every configured key, from the environment and the keys file, as bytes."""
    raw: list[str] = []
    if settings.api_keys is not None:
        raw += settings.api_keys.get_secret_value().split(",")
    if settings.api_keys_file is not None:
        raw += _read_keys_file(settings.api_keys_file)
    return tuple(dict.fromkeys(k.strip().encode() for k in raw if k.strip()))


def _read_keys_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read API keys file {path}: {exc}") from exc
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"API keys file {path} has no keys")
    return keys


class AmbiguousKey(ValueError):
    """The request carries more than one credential: which one to judge is not ours to guess."""


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries in ``Authorization: Bearer`` or ``X-API-Key``, if any.

    Raises ``AmbiguousKey`` for more than one: two ``X-API-Key`` headers, two ``Authorization``
    headers, or a key in each. Judging only the first (or the last) would let a proxy and the service
    disagree about which key was checked (RFC 6750, section 3.1: ``invalid_request``).
    """
    api_keys = [value for name, value in headers if name == b"x-api-key"]
    authorizations = [value for name, value in headers if name == b"authorization"]
    bearer = [_bearer(value) for value in authorizations]
    keys = [k.strip() for k in api_keys] + [k for k in bearer if k is not None]
    if len(api_keys) > 1 or len(authorizations) > 1 or len(keys) > 1:
        raise AmbiguousKey(_ambiguity(len(api_keys), len(authorizations)))
    return keys[0] if keys else None


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


def _ambiguity(api_keys: int, authorizations: int) -> str:
    counts = {"X-API-Key": api_keys, "Authorization": authorizations}
    found = " and ".join(f"{n} {name}" for name, n in counts.items() if n)
    return (
        f"more than one credential in the request ({found} headers): "
        "send exactly one, as Authorization: Bearer <key> or X-API-Key: <key>"
    )


def key_is_valid(key: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Constant-time check against every key (no early exit that would tell which one nearly matched)."""
    if key is None:
        return False
    matches = [hmac.compare_digest(key, k) for k in keys]
    return any(matches)


class ApiKeyMiddleware:
    """401 (with ``WWW-Authenticate``) without a valid key or with more than one; 403 on admin routes
    when no key is set."""

    def __init__(self, app: ASGIApp, keys: tuple[bytes, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        admin = path.startswith(ADMIN_PREFIX)
        if not admin and (not self.keys or is_public(path)):
            return await self.app(scope, receive, send)
        if not self.keys:
            return await send_error(
                send,
                403,
                "admin endpoints are disabled: no API key is configured "
                "(set SENTIMENT_API_KEYS or SENTIMENT_API_KEYS_FILE)",
            )
        try:
            key = presented_key(scope["headers"])
        except AmbiguousKey as exc:
            # 401, the answer every keyed route documents, with RFC 6750's error code in the challenge.
            return await send_error(send, 401, str(exc), INVALID_REQUEST)
        if not key_is_valid(key, self.keys):
            why = "no API key" if key is None else "an invalid API key"
            message = f"{why}: send Authorization: Bearer <key> or X-API-Key: <key>"
            return await send_error(send, 401, message, CHALLENGE)
        await self.app(scope, receive, send)


def needs_key(path: str, keys_configured: bool) -> bool:
    """Whether a route answers 401 without a key (for the OpenAPI description)."""
    return path.startswith(ADMIN_PREFIX) or (keys_configured and not is_public(path))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


# -- the body --------------------------------------------------------------------------------------


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes`` (declared or streamed), 415 for a body that is not JSON."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        length: bytes | None = None
        content_type = b""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        declared = int(length) if length is not None and length.isdigit() else None
        if (declared is None and not chunked) or declared == 0:
            return await self.app(scope, receive, send)  # no body: nothing to check
        if declared is not None and declared > self.max_bytes:
            return await send_error(send, 413, self._too_large(f"{declared} bytes"))
        if not _is_json(content_type):
            return await send_error(send, 415, _unsupported(content_type))
        if declared is not None:
            return await self.app(scope, receive, send)  # the server holds the body to its length
        await self._buffered(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a body of unknown length up to the limit, then replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await send_error(send, 413, self._too_large(f"more than {self.max_bytes} bytes"))
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: str) -> str:
        return (
            f"request body of {size} is over the limit of {self.max_bytes} bytes "
            "(SENTIMENT_MAX_BODY_BYTES): send fewer or shorter texts per request"
        )


def _unsupported(content_type: bytes) -> str:
    given = content_type.decode("latin-1") or "none"
    return f"Content-Type must be application/json (got {given})"


# -- the answers above, in the OpenAPI schema ------------------------------------------------------

BODY_ERRORS = {
    400: error_response("the body is not valid UTF-8 JSON"),
    413: error_response("over a documented limit (body bytes, texts per request, characters per text)"),
    415: error_response("Content-Type is not application/json"),
}
AUTH_ERRORS = {
    401: error_response("no valid API key"),
    403: error_response("admin endpoints are disabled while no API key is configured"),
}


# Either header works; /docs gets an "Authorize" button for each.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def document_errors(app: FastAPI, keys_configured: bool) -> None:
    """Add the middleware's answers (400/401/403/413/415) and the API-key schemes to the OpenAPI schema."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                added = {**(BODY_ERRORS if method.upper() in _BODY_METHODS else {})}
                if needs_key(path, keys_configured):
                    added |= AUTH_ERRORS
                    operation.setdefault("security", [{name: []} for name in SECURITY_SCHEMES])
                    schema.setdefault("components", {}).setdefault("securitySchemes", SECURITY_SCHEMES)
                for code, spec in added.items():
                    responses.setdefault(str(code), spec)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
