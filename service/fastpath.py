"""``POST /predict``'s hot path, as pure ASGI, in front of FastAPI's routing.

FastAPI spends most of a small request's time around the handler: routing, dependency solving, the
request body parsed with ``json.loads`` and validated field by field, the response validated and
built as pydantic objects (README, "Serving performance"). For a well-formed request this layer does
the same work directly: the raw body is validated by ``PredictRequest.model_validate_json`` (pydantic's
Rust JSON parser), the limits are checked, the texts go to the engine, and the response is written as
bytes by ``pydantic_core.to_json`` straight from the engine's ``Prediction`` dataclasses, which have
``PredictionOut``'s fields in its order: the same bytes FastAPI writes.

Anything else goes to FastAPI untouched, with the body replayed: a body that does not validate, a
limit exceeded, a content type other than plain ``application/json``, the model not loaded yet. So
every error (422 with its message, 400, 413, 503) comes from the one place that always made it, and
the OpenAPI schema still comes from the FastAPI route. Only the answers to an accepted request (200,
or 503/504 from the engine) are written here, through the app's own HTTP error handler.

It sits innermost among the middleware, so request ids, metrics, API keys and body limits apply as
before; it sets ``scope["route"]`` so that metrics name the route as FastAPI's router would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException, Request
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.limits import http_error
from service.routes import run_predictions
from service.schemas import PredictRequest

PATH = "/predict"
_UNSET = object()
_JSON_HEADER = (b"content-type", b"application/json")


class PredictFastPath:
    """Serve well-formed ``POST /predict`` requests without FastAPI's per-request machinery."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: ``served`` and ``settings``
        self.route: Any = _UNSET  # the FastAPI route of /predict, found on first use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        served = self.state.served
        if served is None or not _plain_json(scope["headers"]):
            return await self.app(scope, receive, send)
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return await self._fallback(scope, receive, send, messages)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            texts = PredictRequest.model_validate_json(body).texts
        except ValidationError:  # FastAPI says what is wrong, in its own words
            return await self._fallback(scope, receive, send, messages)
        settings = self.state.settings
        if len(texts) > settings.max_texts_per_request or any(
            len(t) > settings.max_text_chars for t in texts
        ):
            return await self._fallback(scope, receive, send, messages)
        if self.route is _UNSET:
            self.route = _find_route(getattr(scope.get("app"), "routes", ()))
        if self.route is not None:
            scope["route"] = self.route

        try:
            results = await run_predictions(served, settings, texts)
        except HTTPException as exc:
            response = await http_error(Request(scope, receive, send), exc)
            return await response(scope, receive, send)
        served.on_predictions(results)
        model = {"name": served.name, "version": served.predictor.checkpoint.version}
        content = to_json({"predictions": results, "model": model})
        headers = [(b"content-length", str(len(content)).encode()), _JSON_HEADER]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _fallback(self, scope: Scope, receive: Receive, send: Send, messages: list[Message]) -> None:
        """Hand the request to FastAPI, replaying the messages already read."""

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """``Content-Type: application/json`` (parameters allowed): what FastAPI surely parses as JSON."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _find_route(routes: Iterable[Any]) -> Any:
    """The ``POST /predict`` route among ``routes``, looking inside included routers too."""
    for route in routes:
        if getattr(route, "path", None) == PATH and "POST" in (getattr(route, "methods", None) or ()):
            return route
        # FastAPI >= 0.165 keeps an included router as one entry that wraps it.
        included = getattr(route, "original_router", None)
        if included is not None and (found := _find_route(included.routes)) is not None:
            return found
    return None
