"""HTTP routes: predictions, health and model information."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from model.predictor import Prediction
from service.batching import EngineUnavailable, QueueFull
from service.deps import ServedDep, ServedModel, SettingsDep
from service.limits import error_response
from service.schemas import (
    Health,
    Limits,
    ModelInfo,
    ModelRef,
    PredictionOut,
    PredictRequest,
    PredictResponse,
)
from service.settings import Settings

router = APIRouter()


PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: error_response("over a limit: texts per request, characters per text or body bytes"),
    503: error_response("overloaded (queue full, with Retry-After) or the model is not loaded yet"),
    504: error_response("no result within the request deadline (SENTIMENT_REQUEST_TIMEOUT_S)"),
}


@router.post("/predict", response_model=PredictResponse, tags=["predictions"], responses=PREDICT_ERRORS)
async def predict(body: PredictRequest, settings: SettingsDep, served: ServedDep) -> PredictResponse:
    """Classify each text; predictions come back in input order."""
    check_limits(body.texts, settings)
    results = await run_predictions(served, settings, body.texts)
    served.on_predictions(results)
    checkpoint = served.predictor.checkpoint
    return PredictResponse(
        predictions=[
            PredictionOut(label=p.label, score=p.score, probabilities=p.probabilities, truncated=p.truncated)
            for p in results
        ],
        model=ModelRef(name=served.name, version=checkpoint.version),
    )


async def run_predictions(served: ServedModel, settings: Settings, texts: list[str]) -> list[Prediction]:
    """The engine's predictions for ``texts``; 503 when its queue is full, 504 past the deadline."""
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            return await served.engine.submit(texts)
    except EngineUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; retry shortly", headers={"Retry-After": "1"}
        ) from exc
    except QueueFull as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"overloaded: {exc}; retry shortly",
            headers={"Retry-After": "1"},
        ) from exc
    except TimeoutError as exc:
        raise HTTPException(
            status.HTTP_504_GATEWAY_TIMEOUT, f"no result within {settings.request_timeout_s} s"
        ) from exc


def check_limits(texts: list[str], settings: Settings) -> None:
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
                f"texts.{i} has {len(text)} characters; the limit is {settings.max_text_chars} "
                "(SENTIMENT_MAX_TEXT_CHARS): shorten it",
            )


@router.get(
    "/healthz",
    response_model=Health,
    tags=["health"],
    responses={503: {"description": "the model process has been down longer than allowed: restart me"}},
)
async def healthz(request: Request, settings: SettingsDep) -> Health:
    """Liveness: the process is up and answering, and has not been without its model for too long."""
    served = getattr(request.app.state, "served", None)  # None while starting up: still alive
    since = served.engine.unavailable_since if served is not None else None
    limit = settings.liveness_unavailable_s
    if since is not None and time.monotonic() - since > limit:
        why = served.engine.unavailable if served is not None else None
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"no model for over {limit:.0f} s: {why or 'restarting'}"
        )
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    tags=["health"],
    responses={
        503: {"description": "model not loaded yet, its process restarting, or the queue full (shed load)"}
    },
)
async def readyz(served: ServedDep) -> Health:
    """Readiness: the model is loaded and the queue has room; 503 tells a balancer to send less."""
    if (why := served.engine.unavailable) is not None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, why, headers={"Retry-After": "1"})
    if served.engine.saturated:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"overloaded: {served.engine.queued} texts queued (limit {served.engine.max_queue_texts})",
            headers={"Retry-After": "1"},
        )
    return Health(status="ready")


@router.get("/v1/model", response_model=ModelInfo, tags=["model"])
async def model_info(served: ServedDep, settings: SettingsDep) -> ModelInfo:
    """The served model: labels, config, metrics and provenance."""
    c = served.predictor.checkpoint
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
