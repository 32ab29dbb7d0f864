"""Bad input stops at the door: body size and content type checked before anything parses the body.

Pure ASGI (no ``BaseHTTPMiddleware``), so the hot path pays a header scan and nothing else: a body
with a ``Content-Length`` within the limit passes straight through; only a body without one
(chunked) is counted as it arrives, and cut off with 413 the moment it passes the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer with FastAPI's error shape, ``{"detail": message}``, without touching the app."""
    body = json.dumps({"detail": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


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


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP errors, with the reason when the body could not be parsed at all."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        exc = StarletteHTTPException(400, _parse_problem(exc.__cause__), exc.headers)
    return await http_exception_handler(request, exc)


def _parse_problem(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not valid UTF-8 (byte {cause.start}): JSON must be UTF-8"
    if isinstance(cause, RecursionError):
        return "request body is nested too deeply to parse"
    return f"request body could not be parsed as JSON: {cause}"


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI response whose body is ``{"detail": "..."}``."""
    schema = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


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


def document_errors(app: FastAPI, needs_key: Callable[[str], bool]) -> None:
    """Add the middleware's answers (400/401/403/413/415) and the API-key schemes to the OpenAPI schema."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                added = {**(BODY_ERRORS if method.upper() in _BODY_METHODS else {})}
                if needs_key(path):
                    added |= AUTH_ERRORS
                    operation.setdefault("security", [{name: []} for name in SECURITY_SCHEMES])
                    schema.setdefault("components", {}).setdefault("securitySchemes", SECURITY_SCHEMES)
                for code, spec in added.items():
                    responses.setdefault(str(code), spec)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
