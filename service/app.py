"""The FastAPI application: the model loads in the lifespan, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from model.checkpoint import load_checkpoint
from model.predictor import Predictor
from service import compat, demo, explain_routes
from service.batching import Batcher, DirectRunner
from service.deps import ServedModel
from service.routes import router
from service.settings import Settings, get_settings

log = logging.getLogger("service")


def load_engine(settings: Settings) -> Batcher:
    predictor = Predictor(
        load_checkpoint(settings.checkpoint), device=settings.device, batch_size=settings.max_batch_size
    )
    if settings.batching:
        return Batcher(predictor, settings.max_batch_size, settings.max_wait_ms, settings.max_queue_texts)
    return DirectRunner(predictor, settings.max_queue_texts)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        engine = load_engine(settings)
        await engine.start()
        app.state.served = ServedModel(engine, settings.served_name)
        log.info(
            "serving %s version %s on %s",
            settings.checkpoint,
            engine.predictor.checkpoint.version,
            engine.predictor.device,
        )
        try:
            yield
        finally:
            await engine.drain()
            await engine.stop()
            app.state.served = None

    app = FastAPI(
        title="LSTM sentiment service",
        summary="Batched sentiment predictions from an embedding + BiLSTM classifier.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.served = None
    app.dependency_overrides[get_settings] = lambda: settings
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.include_router(router)
    for extra in (explain_routes.router, compat.router, demo.router):
        app.include_router(extra)
    return app


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's per-field details plus one readable sentence saying what to fix."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    message = f"{where}: {first.get('msg', 'invalid request')}"
    details = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
    return JSONResponse(status_code=422, content={"message": message, "detail": details})
