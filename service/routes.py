"""HTTP routes: predictions, health and model information; what they serve, and their dependencies."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from model.checkpoint import Checkpoint
from model.predictor import Prediction, Predictor, aggregate, is_mixed, to_predictions
from model.sentences import Span, plan
from service.engine import Engine, Result
from service.errors import (
    RETRY,
    client_gone,
    engine_errors,
    error_response,
    http_error,
    parse,
    validation_error,
)
from service.schemas import Health, Limits, ModelInfo, PredictRequest, PredictResponse
from service.settings import Settings
from service.startup import build_predictor


@dataclass
class ServedModel:
    """The engine, the checkpoint it runs (swapped by a reload), and the name clients use."""

    engine: Engine
    checkpoint: Checkpoint
    settings: Settings
    # Called with every response's predictions (the metrics count them by label).
    on_predictions: Callable[[Sequence[Prediction]], None] = lambda predictions: None
    _explainer: Predictor | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.model_name

    def explainer(self) -> Predictor:
        """A predictor in this process for ``/explain``, built on first use and after a reload."""
        explainer = self._explainer
        if explainer is None or explainer.checkpoint is not self.checkpoint:
            explainer = self._explainer = build_predictor(self.settings, self.checkpoint)
        return explainer


def served_model(app: Any) -> ServedModel:
    """What ``app`` (the FastAPI application) serves; 503 until its lifespan has loaded the model."""
    served: ServedModel | None = app.state.served
    if served is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the model is not loaded yet; retry shortly")
    return served


# ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
async def _served(request: Request) -> ServedModel:
    return served_model(request.app)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings  # the settings the app was created with
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]
ServedDep = Annotated[ServedModel, Depends(_served)]


router = APIRouter()
BLANK = "must contain a non-whitespace character"

PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: error_response("over a limit: texts per request, characters per text or body bytes"),
    422: error_response("the body does not validate: `detail` says what to fix, `errors` each field"),
    503: error_response("overloaded (queue full, with Retry-After) or the model is not loaded yet"),
    504: error_response("no result within the request deadline (SENTIMENT_REQUEST_TIMEOUT_S)"),
}
_BODY = {"required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}


# The body is read and validated here rather than by FastAPI: pydantic's JSON parser on the raw bytes,
# and the response written by pydantic_core from the engine's ``Prediction`` dataclasses (which have
# ``PredictionOut``'s fields in its order), skip the per-field work that dominates a small request.
# ``PredictApp`` serves it from inside the middleware stack (see app.py), ahead of Starlette's router
# and exception middleware, whose layers a small request otherwise passes twice (on its way in, and when
# the engine's answer wakes it): docs/serving-performance.md. The FastAPI route documents the same
# function in the OpenAPI schema.
@router.post(
    "/predict",
    response_model=PredictResponse,
    tags=["predictions"],
    responses=PREDICT_ERRORS,
    openapi_extra={"requestBody": _BODY},
)
async def predict(request: Request) -> Response:
    """Classify a text or a list of texts, whole or sentence by sentence; answers in input order."""
    answer = await predictions_for(served_model(request.app), await _body(request.receive))
    return Response(answer, media_type="application/json")


async def predictions_for(served: ServedModel, raw: bytes) -> bytes:
    """``POST /predict``: the request body in, the response body out; refusals as HTTP errors."""
    body = parse(PredictRequest, raw)
    settings, texts = served.settings, body.texts
    per_text = body.errors == "per_text"
    if not per_text:
        check_blank(texts)
    check_count(texts, settings)
    problems = {i: e for i, t in enumerate(texts) if (e := text_problem(t, settings, f"texts.{i}"))}
    if problems and not per_text:
        raise problems[min(problems)]
    good = [i for i in range(len(texts)) if i not in problems]
    predictions: list[Any] = [None] * len(texts)
    version = served.checkpoint.version
    if good:
        readings, version = await read_texts(served, settings, [texts[i] for i in good], body.sentences)
        served.on_predictions([r if isinstance(r, Prediction) else r.prediction for r in readings])
        for i, reading in zip(good, readings, strict=True):
            predictions[i] = reading if isinstance(reading, Prediction) else reading.out()
    answer: dict[str, Any] = {"predictions": predictions}
    if per_text:
        answer["errors"] = [
            {"index": i, "status": e.status_code, "detail": e.detail} for i, e in sorted(problems.items())
        ]
    answer["model"] = {"name": served.name, "version": version}
    return to_json(answer)


PREDICT_ROUTE = Route("/predict", predict, methods=["POST"])  # what metrics and logs name the route by
_JSON = (b"content-type", b"application/json")


class PredictApp:
    """``POST /predict`` answered by ``predictions_for`` in plain ASGI messages, its errors by the app's
    handlers; the rest passes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        scope["route"] = PREDICT_ROUTE
        try:
            answer = await predictions_for(served_model(scope["app"]), await _body(receive))
        except (RequestValidationError, StarletteHTTPException, ClientDisconnect) as exc:
            await self._error(exc, scope, receive, send)
            return
        length = (b"content-length", b"%d" % len(answer))
        await send({"type": "http.response.start", "status": 200, "headers": [_JSON, length]})
        await send({"type": "http.response.body", "body": answer})

    @staticmethod
    async def _error(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """The answer the handlers app.py registers for every other route would give."""
        request = Request(scope, receive, send)
        response: Response
        if isinstance(exc, RequestValidationError):
            response = await validation_error(request, exc)
        elif isinstance(exc, StarletteHTTPException):
            response = await http_error(request, exc)
        else:
            response = await client_gone(request, exc)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes:
    """The whole request body, read from ``receive`` (what ``Request.body`` does, without a Request)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def run_predictions(
    served: ServedModel, settings: Settings, texts: list[str], where: str = "texts"
) -> Result:
    """The engine's predictions for ``texts`` (long ones read by sentences), under the limits; engine
    refusals as HTTP errors."""
    check_texts(texts, settings, where)
    readings, version = await read_texts(served, settings, texts, by_sentence=False)
    predictions = [r if isinstance(r, Prediction) else r.prediction for r in readings]
    served.on_predictions(predictions)
    return Result(predictions, version)


@dataclass
class Reading:
    """A text read sentence by sentence: its document prediction, whether it is mixed, its sentences."""

    prediction: Prediction
    mixed: bool
    sentences: list[tuple[Span, Prediction]]

    def out(self) -> dict[str, Any]:
        p = self.prediction
        return {
            "label": p.label,
            "score": p.score,
            "probabilities": p.probabilities,
            "truncated": p.truncated,
            "mixed": self.mixed,
            "sentences": [
                {"start": a, "end": b, "label": s.label, "score": s.score, "probabilities": s.probabilities}
                for (a, b), s in self.sentences
            ],
        }


async def read_texts(
    served: ServedModel, settings: Settings, texts: list[str], by_sentence: bool
) -> tuple[list[Prediction | Reading], str]:
    """Each text read whole, or with ``by_sentence`` by its sentences (all of them in one submit).

    Whole: a text the model had to cut (over its max_length tokens) is read again by sentences, and its
    prediction is their mean, so nothing is silently left out.
    """
    if by_sentence:
        return await read_by_sentence(served, settings, texts)  # type: ignore[return-value]
    result = await submit(served, settings, texts)
    readings: list[Prediction | Reading] = list(result.predictions)
    long = [i for i, p in enumerate(result.predictions) if p.truncated]
    if not long:
        return readings, result.version
    again, version = await read_by_sentence(served, settings, [texts[i] for i in long])
    for i, reading in zip(long, again, strict=True):
        readings[i] = reading.prediction
    return readings, version


async def read_by_sentence(
    served: ServedModel, settings: Settings, texts: list[str]
) -> tuple[list[Reading], str]:
    """Every sentence of every text (a very long one in overlapping windows) through one submit."""
    max_words = max(1, served.checkpoint.config.max_length * 3 // 4)  # words are ~1.3 tokens
    plans = [plan(text, max_words) for text in texts]
    pieces = [
        text[a:b] for text, sentences in zip(texts, plans, strict=True) for s in sentences for a, b in s
    ]
    if len(pieces) > settings.max_sentences_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(pieces)} sentences to read in one request; the limit is "
            f"{settings.max_sentences_per_request} (SENTIMENT_MAX_SENTENCES_PER_REQUEST): split the request",
        )
    result = await submit(served, settings, pieces)
    parts = iter(result.predictions)
    return [_reading([[next(parts) for _ in s] for s in sentences], sentences) for sentences in plans], (
        result.version
    )


def _reading(parts: list[list[Prediction]], pieces: list[list[Span]]) -> Reading:
    """A text's reading from its sentences' pieces: a sentence is the length-weighted mean of its
    windows, the text the plain mean of its sentences (docs/quality.md, "Sentences")."""
    labels = list(parts[0][0].probabilities)
    sentences = []
    for windows, spans in zip(parts, pieces, strict=True):
        probs = np.array([list(w.probabilities.values()) for w in windows])
        mean = aggregate(probs, [b - a for a, b in spans])
        cut = any(w.truncated for w in windows)
        sentences.append(((spans[0][0], spans[-1][1]), to_predictions(labels, mean[None], [cut])[0]))
    probs = np.array([list(s.probabilities.values()) for _, s in sentences])
    ones = [1.0] * len(sentences)
    truncated = any(s.truncated for _, s in sentences)
    document = to_predictions(labels, aggregate(probs, ones)[None], [truncated])[0]
    return Reading(document, is_mixed(labels, probs, ones), sentences)


async def submit(served: ServedModel, settings: Settings, texts: list[str]) -> Result:
    async with engine_errors(settings.request_timeout_s):
        return await served.engine.submit(texts)


def check_blank(texts: list[str]) -> None:
    """422, in the shape of a validation error, for every text without a non-whitespace character."""
    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank:
        raise RequestValidationError(
            [{"loc": ("body", "texts", i), "msg": BLANK, "type": "blank_text"} for i in blank]
        )


def check_count(texts: list[str], settings: Settings) -> None:
    if len(texts) > settings.max_texts_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(texts)} texts in one request; the limit is {settings.max_texts_per_request} "
            "(SENTIMENT_MAX_TEXTS_PER_REQUEST): split the request",
        )


def check_texts(texts: list[str], settings: Settings, where: str = "texts") -> None:
    """413 past the per-request limits; 422 for a text the model cannot read."""
    check_count(texts, settings)
    for i, text in enumerate(texts):
        if (problem := text_problem(text, settings, f"{where}.{i}")) is not None:
            raise problem


def text_problem(text: str, settings: Settings, where: str) -> HTTPException | None:
    """Why the model cannot read ``text`` (413 too long, 422 blank or not valid Unicode), or None."""
    if len(text) > settings.max_text_chars:
        return HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{where} has {len(text)} characters; the limit is {settings.max_text_chars} "
            "(SENTIMENT_MAX_TEXT_CHARS): shorten it",
        )
    if not text.strip():
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where}: {BLANK}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. "\ud800" in JSON
            return HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"{where} holds an unpaired surrogate at character {exc.start}: send valid Unicode",
            )
    return None


@router.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    responses={503: error_response("the model has been down longer than allowed: restart me")},
)
async def healthz(request: Request, settings: SettingsDep) -> Health:
    """Liveness: the process is up and answering, and has not been without its model for too long."""
    served: ServedModel | None = request.app.state.served  # None while starting up: still alive
    since = served.engine.unavailable_since if served is not None else None
    limit = settings.liveness_unavailable_s
    if served is not None and since is not None and time.monotonic() - since > limit:
        why = served.engine.unavailable or "restarting"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no model for over {limit:.0f} s: {why}")
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    tags=["health"],
    responses={503: error_response("model not loaded yet, its process restarting, or the queue full")},
)
async def readyz(served: ServedDep) -> Health:
    """Readiness: the model is loaded and the queue has room; 503 tells a balancer to send less."""
    if (why := served.engine.unavailable) is not None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, why, headers=RETRY)
    queue = served.engine.scheduler
    if queue.queued >= queue.max_queue_texts:
        why = f"overloaded: {queue.queued} texts queued (limit {queue.max_queue_texts})"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, why, headers=RETRY)
    return Health(status="ready")


@router.get("/v1/model", response_model=ModelInfo, tags=["model"])
async def model_info(served: ServedDep, settings: SettingsDep) -> ModelInfo:
    """The served model: labels, config, metrics, provenance and this server's request limits."""
    c = served.checkpoint
    return ModelInfo(
        name=served.name,
        version=c.version,
        labels=c.labels,
        config=c.config.to_dict(),
        temperature=c.temperature,
        metrics=c.metrics,
        provenance=c.provenance,
        training=c.training,
        limits=Limits(
            max_texts_per_request=settings.max_texts_per_request,
            max_text_chars=settings.max_text_chars,
            max_body_bytes=settings.max_body_bytes,
            max_sentences_per_request=settings.max_sentences_per_request,
        ),
    )
