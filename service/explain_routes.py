"""``POST /explain``: each text's prediction plus every token's contribution to it.

Explanations do not go through the batching engine: a text of T tokens costs T + 1 model rows, built at
the token level (see ``model.explain``). They run in a worker thread, off the event loop, under the same
limits and deadline as ``/predict``, at most ``SLOTS`` at a time so that a burst of explanations cannot
crowd the batching engine off the CPU (the rest wait, within their deadline).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from model.explain import METHOD, Explanation, explain
from model.predictor import Predictor
from service.deps import ServedDep, SettingsDep
from service.errors import JsonRoute, engine_errors
from service.routes import PREDICT_ERRORS, check_texts
from service.schemas import ExplainRequest, ExplainResponse, ExplanationOut, ModelRef, TokenContributionOut

SLOTS = 2
router = APIRouter(route_class=JsonRoute)  # refuses a body in UTF-16 or with a BOM


def _slots(request: Request) -> asyncio.Semaphore:
    """The app's explanation slots, made on first use (a semaphore belongs to one event loop)."""
    state = request.app.state
    if getattr(state, "explain_slots", None) is None:
        state.explain_slots = asyncio.Semaphore(SLOTS)
    slots: asyncio.Semaphore = state.explain_slots
    return slots


async def _explain(
    slots: asyncio.Semaphore, predictor: Predictor, texts: list[str], timeout_s: float
) -> list[Explanation]:
    """Explain in a worker thread within ``timeout_s``, waiting for a slot included. A thread cannot be
    cancelled: past the deadline it is told to stop before its next forward pass, and its slot is
    given back only when it has, so no more than ``SLOTS`` ever run."""
    stop = threading.Event()
    async with asyncio.timeout(timeout_s) as deadline:
        await slots.acquire()
    work = asyncio.ensure_future(asyncio.to_thread(explain, predictor, texts, stop=stop))
    work.add_done_callback(_release(slots))
    try:
        async with asyncio.timeout_at(deadline.when()):
            return await asyncio.shield(work)
    except (TimeoutError, asyncio.CancelledError):  # past the deadline, or the client went away
        stop.set()
        raise


def _release(slots: asyncio.Semaphore) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback that gives the slot back and retrieves an outcome nobody may await any more."""

    def done(work: asyncio.Future[Any]) -> None:
        slots.release()
        if not work.cancelled():
            work.exception()

    return done


@router.post("/explain", response_model=ExplainResponse, tags=["predictions"], responses=PREDICT_ERRORS)
async def explain_texts(
    body: ExplainRequest, request: Request, settings: SettingsDep, served: ServedDep
) -> ExplainResponse:
    """Classify each text and say how much each word pushed towards (or against) the label."""
    check_texts(body.texts, settings)
    # Taken once: a hot reload mid-request does not mix two models.
    predictor = await asyncio.to_thread(served.explainer)
    async with engine_errors(settings.request_timeout_s):
        results = await _explain(_slots(request), predictor, body.texts, settings.request_timeout_s)
    return ExplainResponse(
        explanations=[
            ExplanationOut(
                label=e.label,
                score=e.score,
                probabilities=e.probabilities,
                truncated=e.truncated,
                tokens=[TokenContributionOut(**vars(t)) for t in e.tokens],
            )
            for e in results
        ],
        method=METHOD,
        model=ModelRef(name=served.name, version=predictor.checkpoint.version),
    )
