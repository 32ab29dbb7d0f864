"""HTTP routes: predictions, health and model information."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic_core import to_json
from starlette.routing import Route

from service.deps import ServedDep, ServedModel, SettingsDep, served_model
from service.engine import Result
from service.errors import RETRY, engine_errors, error_response, parse
from service.schemas import Health, Limits, ModelInfo, PredictRequest, PredictResponse
from service.settings import Settings

router = APIRouter()

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
# It is served by ``PREDICT_ROUTE``, a plain Starlette route put in front of FastAPI's (see app.py):
# FastAPI's per-request machinery around a handler and its included-router wrapper cost about a third
# of the throughput at 64 connections (``python -m bench.serve``). The FastAPI route documents the same
# function in the OpenAPI schema.
@router.post(
    "/predict",
    response_model=PredictResponse,
    tags=["predictions"],
    responses=PREDICT_ERRORS,
    openapi_extra={"requestBody": _BODY},
)
async def predict(request: Request) -> Response:
    """Classify a text or a list of texts; predictions come back in input order."""
    served = served_model(request)
    texts = parse(PredictRequest, await request.body()).texts
    result = await run_predictions(served, served.settings, texts)
    content = to_json(
        {"predictions": result.predictions, "model": {"name": served.name, "version": result.version}}
    )
    return Response(content, media_type="application/json")


PREDICT_ROUTE = Route("/predict", predict, methods=["POST"])


async def run_predictions(
    served: ServedModel, settings: Settings, texts: list[str], where: str = "texts"
) -> Result:
    """The engine's predictions for ``texts``, under the limits; engine refusals as HTTP errors."""
    check_texts(texts, settings, where)
    async with engine_errors(settings.request_timeout_s):
        result = await served.engine.submit(texts)
    served.on_predictions(result.predictions)
    return result


def check_texts(texts: list[str], settings: Settings, where: str = "texts") -> None:
    """413 past the per-request limits; 422 for a text the model cannot read."""
    if len(texts) > settings.max_texts_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(texts)} texts in one request; the limit is {settings.max_texts_per_request} "
            "(SENTIMENT_MAX_TEXTS_PER_REQUEST): split the request",
        )
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{where}.{i} has {len(text)} characters; the limit is {settings.max_text_chars} "
                "(SENTIMENT_MAX_TEXT_CHARS): shorten it",
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate, e.g. "\ud800" in JSON
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    f"{where}.{i} holds an unpaired surrogate at character {exc.start}: send valid Unicode",
                ) from exc


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
    if served.engine.saturated:
        engine = served.engine
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"overloaded: {engine.queued} texts queued (limit {engine.max_queue_texts})",
            headers=RETRY,
        )
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
        ),
    )
