"""Model lifecycle: hot reload through ``POST /admin/reload`` or SIGHUP.

A reload checks the new checkpoint (its files, off the event loop), starts a runner on it, runs a probe
batch through that runner, then hands it to the engine, which switches once every request begun on
the old model has finished there. Anything wrong with the new checkpoint leaves the old model serving
and is reported (422 on the endpoint, an error log line for SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from model.checkpoint import Checkpoint, load_checkpoint
from service.engine import Runner
from service.routes import ServedDep, ServedModel
from service.schemas import ModelRef

log = logging.getLogger("service.admin")
PROBE = ["this is a probe sentence", "I love it", "I hate it", "x " * 2000]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = Field(
        None, max_length=4096, description="checkpoint directory to load (default: the active one)"
    )


class ReloadResponse(BaseModel):
    checkpoint: str = Field(description="the directory now served")
    previous: ModelRef
    model: ModelRef


class ReloadError(ValueError):
    """The new checkpoint could not be loaded or failed its probe; the old model keeps serving."""


async def reload_model(app: FastAPI, path: Path | None = None) -> ReloadResponse:
    """Swap in the checkpoint at ``path`` (default: the active one, re-read from disk)."""
    served: ServedModel | None = app.state.served
    if served is None:
        raise ReloadError("the service has not finished starting")
    async with app.state.reload_lock:  # one reload at a time; requests keep being served meanwhile
        target = Path(path or app.state.checkpoint_path)
        checkpoint = await asyncio.to_thread(_load, target)
        runner = await _start(served, target)
        previous = ModelRef(name=served.name, version=served.checkpoint.version)
        await served.engine.swap(runner, target)  # from the next request on
        served.checkpoint = checkpoint
        app.state.checkpoint_path = target
        if hasattr(app.state, "metrics"):
            app.state.metrics.set_model(served.name, checkpoint.version)
            app.state.metrics.reloads.labels("ok").inc()
    log.info("reloaded %s: version %s -> %s", target, previous.version, checkpoint.version)
    return ReloadResponse(
        checkpoint=str(target),
        previous=previous,
        model=ModelRef(name=served.name, version=checkpoint.version),
    )


def _load(path: Path) -> Checkpoint:
    try:
        return load_checkpoint(path)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError and names the file
        raise ReloadError(f"cannot load checkpoint {path}: {exc}") from exc


async def _start(served: ServedModel, path: Path) -> Runner:
    """A runner on ``path`` that has answered the probe batch sensibly."""
    try:
        runner = await served.engine.start_runner(path)
    except Exception as exc:  # EngineUnavailable: the model process would not start on it
        raise ReloadError(f"cannot serve checkpoint {path}: {exc}") from exc
    try:
        answer = await runner.run(PROBE, [len(PROBE)])
        if answer.errors:
            raise RuntimeError(answer.errors[0])
        if not math.isfinite(float(answer.probabilities.sum())):
            raise ValueError(f"probabilities {answer.probabilities.tolist()}")
    except Exception as exc:
        await runner.close()
        raise ReloadError(f"checkpoint {path} failed its probe batch: {exc}") from exc
    return runner


router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload", response_model=ReloadResponse, responses={422: {"description": "bad checkpoint"}})
async def reload(request: Request, served: ServedDep, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load a checkpoint (default: the active one), probe it, and swap it in; needs an API key."""
    path = Path(body.checkpoint) if body is not None and body.checkpoint else None
    try:
        return await reload_model(request.app, path)
    except ReloadError as exc:
        request.app.state.metrics.reloads.labels("rejected").inc()
        log.error("reload rejected: %s", exc)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{exc}; the old model keeps serving"
        ) from exc


def start(app: FastAPI) -> bool:
    """In the lifespan: make reloads possible, and reload the active checkpoint on SIGHUP.

    Returns whether SIGHUP is handled (only in the main thread of a Unix process).
    """
    app.state.reload_lock = asyncio.Lock()
    app.state.reload_tasks = set()
    app.state.checkpoint_path = app.state.settings.checkpoint
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: _on_sighup(app))
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return False  # not the main thread (in-process tests) or no SIGHUP on this platform
    return True


def stop() -> None:
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def _on_sighup(app: FastAPI) -> None:
    log.info("SIGHUP: reloading %s", app.state.checkpoint_path)
    task = asyncio.get_running_loop().create_task(_reload_logged(app))
    app.state.reload_tasks.add(task)  # keep a reference until done
    task.add_done_callback(app.state.reload_tasks.discard)


async def _reload_logged(app: FastAPI) -> None:
    try:
        await reload_model(app)
    except ReloadError as exc:
        app.state.metrics.reloads.labels("rejected").inc()
        log.error("SIGHUP reload rejected: %s; the old model keeps serving", exc)
