"""The FastAPI application: the model loads in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.checkpoint import load_checkpoint
from model.predictor import Predictor, configure_threads
from service import admin, compat, demo, explain_routes
from service.auth import ApiKeyMiddleware, load_keys, needs_key
from service.batching import Batcher, DirectRunner
from service.deps import ServedModel
from service.fastpath import PredictFastPath
from service.limits import BodyLimitMiddleware, document_errors, http_error
from service.metrics import Metrics
from service.metrics import router as metrics_router
from service.model_process import ProcessBatcher
from service.observability import RequestContextMiddleware
from service.routes import router
from service.settings import Settings, get_settings

log = logging.getLogger("service")


def load_engine(
    settings: Settings,
    on_batch: Callable[[int, float], None] | None = None,
    on_restart: Callable[[str], None] | None = None,
) -> Batcher:
    predictor = Predictor(
        load_checkpoint(settings.checkpoint),
        device=settings.device,
        batch_size=settings.max_batch_size,
        quantize=settings.quantize,
        torchscript=settings.torchscript,
    )
    if settings.batching and settings.model_process:
        return ProcessBatcher(
            predictor,
            settings.checkpoint,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue_texts,
            threads=torch.get_num_threads(),
            quantize=settings.quantize,
            torchscript=settings.torchscript,
            on_batch=on_batch,
            on_restart=on_restart,
        )
    if settings.batching:
        return Batcher(
            predictor,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue_texts,
            on_batch=on_batch,
        )
    return DirectRunner(predictor, settings.max_queue_texts, on_batch=on_batch)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_threads(settings.torch_threads, settings.workers)
        # The inference thread takes the GIL back after tokenising and after each scripted forward pass
        # (after every op in eager mode); a busy event loop holds it for up to the switch interval each
        # time (README, "Serving performance").
        sys.setswitchinterval(settings.gil_switch_ms / 1000)
        metrics: Metrics = app.state.metrics
        engine = load_engine(settings, on_batch=metrics.on_batch, on_restart=metrics.on_restart)
        await engine.start()
        try:  # from here on, whatever fails stops the engine (and its model process)
            served = ServedModel(engine, settings.served_name, on_predictions=metrics.on_predictions)
            app.state.served = served
            metrics.watch_queue(lambda: engine.queued, lambda: engine.max_queue_texts)
            metrics.set_model(settings.served_name, engine.predictor.checkpoint.version)
            admin.start(app)
            # What start-up made (torch, FastAPI, the model: ~200k objects) lives as long as the process.
            # Frozen, the cyclic GC stops re-scanning it: a full collection took 40-55 ms with the GIL
            # held, stalling every request in flight (README, "Serving performance").
            gc.collect()
            gc.freeze()
            log.info(
                "serving %s version %s on %s",
                settings.checkpoint,
                engine.predictor.checkpoint.version,
                engine.predictor.device,
            )
            yield
        finally:
            admin.stop()
            await _drain(engine, settings.shutdown_grace_s)
            await engine.stop()
            app.state.served = None

    app = FastAPI(
        title="LSTM sentiment service",
        summary="Batched sentiment predictions from an embedding + BiLSTM classifier.",
        version="0.1.0",
        lifespan=lifespan,
        # Off (the default), FastAPI skips its per-request look-up of the global OpenTelemetry providers;
        # on, it traces to whatever providers the process configured.
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.served = None
    # Routes read settings from app.state (service.deps.app_settings), not through
    # dependency_overrides: any override makes FastAPI re-inspect every dependency per request.
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.include_router(router)
    for extra in (explain_routes.router, compat.router, demo.router):
        app.include_router(extra)
    _harden(app, settings)
    return app


def _harden(app: FastAPI, settings: Settings) -> None:
    """Limits, auth, request ids, metrics and admin routes (see README, "Operations")."""
    keys = load_keys(settings)
    app.state.metrics = Metrics()
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.include_router(metrics_router)
    app.include_router(admin.router)
    # Added innermost first: request context sees every answer, auth runs before any body is read,
    # and /predict's fast path sees only requests that passed the limits and auth.
    app.add_middleware(PredictFastPath, state=app.state)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics, access_log=settings.access_log)
    document_errors(app, lambda path: needs_key(path, bool(keys)))


async def _drain(engine: Batcher, grace_s: float) -> None:
    """Let every accepted text get its result, but never hold shutdown past the grace period."""
    try:
        await asyncio.wait_for(engine.drain(), grace_s)
    except TimeoutError:
        log.error("shutdown: %d texts still queued after %.0f s; dropping them", engine.queued, grace_s)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's per-field details plus one readable sentence saying what to fix."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    message = f"{where}: {first.get('msg', 'invalid request')}"
    details = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
    return JSONResponse(status_code=422, content={"message": message, "detail": details})
