"""One error shape for every route: ``{"detail": "what went wrong, and what to fix"}``.

A 422 adds ``errors``, the per-field list (``loc``, ``msg``, ``type``). The Hugging Face and Open
Inference Protocol routes also carry the message as ``error``, the key their clients read, and answer
400 for a body that does not validate, as those protocols do. The engine's outcomes (queue full,
model restarting, past the deadline) become HTTP answers here, for every route family.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine import EngineUnavailable, QueueFull

M = TypeVar("M", bound=BaseModel)
RETRY = {"Retry-After": "1"}
SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "what went wrong, and what to fix"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "422: each invalid field"},
    },
    "required": ["detail"],
}


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI response with the error body."""
    return {"description": description, "content": {"application/json": {"schema": SCHEMA}}}


def error_body(
    message: str, errors: list[dict[str, Any]] | None = None, protocol: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": message}
    if errors is not None:
        body["errors"] = errors
    if protocol:
        body["error"] = message
    return body


class engine_errors:  # lower case: used like asyncio.timeout, ``async with engine_errors(timeout_s):``
    """Run the block within ``timeout_s``; the engine's refusals and the deadline as HTTP errors.

    A class rather than ``@asynccontextmanager``: it is on every request's path, and a generator-based
    context manager costs several microseconds more per request."""

    __slots__ = ("timeout", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.timeout = asyncio.timeout(timeout_s)

    async def __aenter__(self) -> None:
        await self.timeout.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            await self.timeout.__aexit__(kind, exc, tb)
        except TimeoutError as timeout:
            raise HTTPException(
                status.HTTP_504_GATEWAY_TIMEOUT,
                f"no result within {self.timeout_s} s (SENTIMENT_REQUEST_TIMEOUT_S)",
            ) from timeout
        if isinstance(exc, EngineUnavailable):
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; retry shortly", RETRY) from exc
        if isinstance(exc, QueueFull):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"overloaded: {exc}; retry shortly", RETRY
            ) from exc


def parse(model: type[M], body: bytes) -> M:
    """``body`` validated as ``model`` by pydantic's JSON parser; errors as the routes' 400 and 422."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        if errors[0]["type"] != "json_invalid":
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc
        check_encoding(body)  # pydantic refuses a BOM or UTF-16 too, but would call it a JSON error
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as cause:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, _not_utf8(cause)) from None
        if "recursion limit" in errors[0]["msg"]:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "request body is nested too deeply to parse"
            ) from None
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"JSON decode error: {errors[0]['msg']}", "type": "json_invalid"}]
        ) from exc


# JSON is UTF-8 without a byte order mark (RFC 8259, section 8.1). The standard library's json.loads,
# which FastAPI parses bodies with, would take UTF-16 or UTF-32 (found by NUL bytes among the first
# four, as JSON text starts with an ASCII character) or a BOM and decode it silently.
_BOMS = {
    b"\xef\xbb\xbf": "UTF-8",
    b"\xff\xfe": "UTF-16/32 LE",
    b"\xfe\xff": "UTF-16 BE",
    b"\x00\x00\xfe\xff": "UTF-32 BE",
}
_SEND_UTF8 = "send the JSON body as UTF-8 without a byte order mark (RFC 8259)"


def check_encoding(body: bytes) -> None:
    """400 for a body that starts with a byte order mark or is UTF-16/32: JSON is UTF-8, no BOM."""
    head = body[:4]
    if not head.startswith(tuple(_BOMS)) and b"\x00" not in head:
        return
    bom = next((name for mark, name in _BOMS.items() if head.startswith(mark)), None)
    if bom == "UTF-8":
        found = "starts with a UTF-8 byte order mark"
    elif bom:
        found = f"is not valid UTF-8: it starts with a {bom} byte order mark"
    else:
        found = "is not valid UTF-8: it looks like UTF-16 or UTF-32 (NUL bytes)"
    raise HTTPException(status.HTTP_400_BAD_REQUEST, f"request body {found}: {_SEND_UTF8}")


def _not_utf8(cause: UnicodeDecodeError) -> str:
    return f"request body is not valid UTF-8 (byte {cause.start}): {_SEND_UTF8}"


def _readable(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid request')}", errors


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with the per-field list and one sentence saying what to fix."""
    assert isinstance(exc, RequestValidationError)
    message, errors = _readable(exc)
    return JSONResponse(error_body(message, errors), status.HTTP_422_UNPROCESSABLE_CONTENT)


async def http_error(request: Request, exc: Exception) -> Response:
    """HTTP errors in the one shape, with the reason when a body could not be parsed at all."""
    assert isinstance(exc, StarletteHTTPException)
    return _render(request, exc, protocol=False)


def _render(request: Request, exc: StarletteHTTPException, protocol: bool) -> Response:
    message = str(exc.detail)
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        message = _not_utf8(cause)
    elif exc.status_code == 400 and isinstance(cause, RecursionError):
        message = "request body is nested too deeply to parse"
    elif exc.status_code == 400 and cause is not None:
        message = f"request body could not be parsed as JSON: {cause}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
    elif exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path}: the API is described at /docs"
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse(error_body(message, protocol=protocol), exc.status_code, headers=exc.headers)


class JsonRoute(APIRoute):
    """A route whose JSON body FastAPI parses: a body that is not UTF-8 without a BOM is refused first
    (the body is read once; FastAPI's handler gets the same, cached, bytes)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                check_encoding(await request.body())
            return await handler(request)

        return route


class ProtocolRoute(JsonRoute):
    """A Hugging Face or Open Inference Protocol route: 400 for a body that does not validate, and
    the message also under ``error``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                message, _ = _readable(exc)
                return JSONResponse(error_body(message, protocol=True), status.HTTP_400_BAD_REQUEST)
            except StarletteHTTPException as exc:
                return _render(request, exc, protocol=True)

        return route


CLIENT_GONE = 499  # nginx's "client closed request": recorded in metrics and logs; nobody receives it


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client left (or was cut off by a deadline) before its body arrived: no one to answer."""
    return Response(status_code=CLIENT_GONE)
