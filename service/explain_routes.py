"""``POST /explain``: each text's prediction plus every token's contribution to it.

Explanations do not go through the batching engine: a text of T tokens costs T + 1 model rows, built at
the token level (see ``model.explain``). They run in a worker thread, off the event loop, under the same
limits and deadline as ``/predict``, at most ``SLOTS`` at a time so that a burst of explanations cannot
crowd the batching engine off the CPU (the rest wait, within their deadline). A request whose
explanation would take longer than ``DEADLINE_SHARE`` of the deadline on this model (its token steps
against the model's measured throughput) is refused with 413 before it takes a slot.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from model.explain import METHOD, Explanation, Plan, explain, plan, throughput
from model.predictor import Predictor
from service.errors import JsonRoute, engine_errors
from service.routes import PREDICT_ERRORS, ServedDep, ServedModel, SettingsDep, check_texts
from service.schemas import ExplainRequest, ExplainResponse, ExplanationOut, ModelRef, TokenContributionOut

SLOTS = 2
# The most of SENTIMENT_REQUEST_TIMEOUT_S one explanation may need at the model's measured speed: the
# rest is room for waiting for a slot and for sharing the CPU with /predict's batches.
DEADLINE_SHARE = 0.5
router = APIRouter(route_class=JsonRoute)  # refuses a body in UTF-16 or with a BOM


def _slots(request: Request) -> asyncio.Semaphore:
    """The app's explanation slots, made on first use (a semaphore belongs to one event loop)."""
    state = request.app.state
    if getattr(state, "explain_slots", None) is None:
        state.explain_slots = asyncio.Semaphore(SLOTS)
    slots: asyncio.Semaphore = state.explain_slots
    return slots


async def _explain(
    slots: asyncio.Semaphore, predictor: Predictor, texts: list[str] | Plan, timeout_s: float
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
    timeout_s = settings.request_timeout_s
    async with engine_errors(timeout_s):  # building the explainer and the plan count against it too
        predictor, planned = await asyncio.to_thread(_prepare, served, body.texts, timeout_s)
        results = await _explain(_slots(request), predictor, planned, timeout_s)
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


def _prepare(served: ServedModel, texts: list[str], timeout_s: float) -> tuple[Predictor, Plan]:
    """The explainer and the plan of ``texts``; 413 for a plan that does not fit the deadline."""
    predictor = served.explainer()
    planned = plan(predictor, texts)
    seconds = planned.steps / throughput(predictor)
    allowed = DEADLINE_SHARE * timeout_s
    if seconds > allowed:
        fit = max(1, int(len(texts) * allowed / seconds))
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"this explanation would take about {seconds:.1f} s on this model ({len(texts)} texts, "
            f"{planned.rows} token rows); one /explain request may take {allowed:g} s "
            f"({DEADLINE_SHARE:g} of SENTIMENT_REQUEST_TIMEOUT_S={timeout_s:g}): send fewer or shorter "
            f"texts per request (about {fit} like these fit)",
        )
    return predictor, planned
