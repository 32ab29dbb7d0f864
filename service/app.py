"""The FastAPI application: the model loads in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model.checkpoint import load_checkpoint
from service import admin, compat, demo, explain_routes
from service.admission import ApiKeyMiddleware, BodyLimitMiddleware, document_errors, load_keys
from service.engine import Engine
from service.errors import client_gone, http_error, validation_error
from service.metrics import Metrics
from service.metrics import router as metrics_router
from service.observability import RequestContextMiddleware
from service.routes import PredictApp, ServedModel, router
from service.runners import make_engine
from service.settings import Settings, get_settings
from service.startup import configure_process

log = logging.getLogger("service")
GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation (Python's default: 700)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_process(settings)
        metrics: Metrics = app.state.metrics
        checkpoint = await asyncio.to_thread(load_checkpoint, settings.checkpoint)
        engine = make_engine(settings, on_batch=metrics.on_batch, on_restart=metrics.on_restart)
        await engine.start()
        try:  # from here on, whatever fails stops the engine (and its model process)
            served = ServedModel(engine, checkpoint, settings, on_predictions=metrics.on_predictions)
            app.state.served = served
            metrics.watch_queue(lambda: engine.scheduler.queued, lambda: engine.scheduler.max_queue_texts)
            metrics.set_model(served.name, checkpoint.version)
            admin.start(app)
            # What start-up made (torch, FastAPI, the model: ~200k objects) lives as long as the process;
            # frozen, the cyclic GC stops re-scanning it, each full pass a stall of every request in flight.
            # A request's objects are freed by reference counting; collecting the youngest generation
            # every 20,000 allocations instead of 700 leaves the collector a few percent less of a
            # request's CPU (docs/serving-performance.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD)
            log.info("serving %s version %s as %r", settings.checkpoint, checkpoint.version, served.name)
            yield
        finally:
            admin.stop()
            await _drain(engine, settings.shutdown_grace_s)
            await engine.stop()
            app.state.served = None

    app = FastAPI(
        title="LSTM sentiment service",
        summary="Batched sentiment predictions from an embedding + BiLSTM classifier.",
        version=version("lstm-sentiment"),
        lifespan=lifespan,
        # Off (the default), FastAPI skips its per-request look-up of the global OpenTelemetry providers;
        # on, it traces to whatever providers the process configured.
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.served = None
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.include_router(router)
    for extra in (explain_routes.router, compat.router, demo.router):
        app.include_router(extra)
    _harden(app, settings)
    return app


def _harden(app: FastAPI, settings: Settings) -> None:
    """Limits, auth, CORS, request ids, metrics and admin routes."""
    keys = load_keys(settings)
    app.state.metrics = Metrics()
    app.include_router(metrics_router)
    app.include_router(admin.router)
    # Added innermost first: request context sees every answer, CORS answers preflights before auth
    # (a browser sends them without credentials), auth runs before any body is read.
    app.add_middleware(PredictApp)  # innermost: /predict after the limits, before the router (routes.py)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics, access_log=settings.access_log)
    document_errors(app, bool(keys))


async def _drain(engine: Engine, grace_s: float) -> None:
    """Let every accepted text get its result, but never hold shutdown past the grace period."""
    try:
        await asyncio.wait_for(engine.drain(), grace_s)
    except TimeoutError:
        log.error(
            "shutdown: %d texts still queued after %.0f s; dropping them", engine.scheduler.queued, grace_s
        )
