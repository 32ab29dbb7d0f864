"""The batching engine between the HTTP handlers and the model.

Requests put their texts in a bounded queue and await a future. One inference thread takes batches
straight from that queue (round-robin across requests, so a large request is split and interleaved
with small ones instead of starving them), runs the model, and hands the results back to the event
loop, which resolves each request's future with its predictions in input order.

The thread pulls the next batch itself the moment a forward pass ends, so the model never waits for
a busy event loop to schedule it; while it runs, new requests pile up and become the next batch.
When the model is idle a request runs at once (``max_wait_ms=0``): a lone client never waits for
company. Each request's texts are taken shortest first, so a large request's slices hold texts of
similar length (the predictor sorts every batch by length as well, and the LSTM runs packed).

``service.model_process.ProcessBatcher`` (the default with batching) keeps this queue and these rules
but runs the model in a child process instead of the inference thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from model.predictor import Prediction, Predictor

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More texts are waiting than the queue holds; the caller should retry later."""


class EngineUnavailable(RuntimeError):
    """The model cannot take requests just now (its process is restarting); retry shortly."""


class Job:
    """One request: its texts, the future its handler awaits, and how far the batches got."""

    __slots__ = ("abandoned", "done", "future", "order", "results", "taken", "texts")

    def __init__(self, texts: Sequence[str], future: asyncio.Future[list[Prediction]]) -> None:
        self.texts = texts
        self.future = future
        n = len(texts)
        # Text indices, shortest first (made on the event loop for every request: kept cheap).
        self.order: list[int] = [0] if n == 1 else sorted(range(n), key=[len(t) for t in texts].__getitem__)
        self.results: list[Prediction | None] = [None] * n
        self.taken = 0  # texts of ``order`` already handed to a batch
        self.done = 0  # texts with a result
        self.abandoned = False  # cancelled, timed out or failed: drop what is still queued

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.taken


Slice = tuple[Job, int, int]  # positions [start, stop) of a job's ``order`` inside one batch


@dataclass
class BatchStats:
    """Totals since start; read them for a mean batch size (``GET /metrics`` has histograms)."""

    batches: int = 0
    texts: int = 0
    inference_seconds: float = 0.0

    @property
    def mean_batch_size(self) -> float:
        return self.texts / self.batches if self.batches else 0.0


class Batcher:
    """Dynamic batching over a ``Predictor``; ``predictor`` may be swapped at any time (hot reload)."""

    def __init__(
        self,
        predictor: Predictor,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        max_queue_texts: int = 4096,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue_texts = max_queue_texts
        self.stats = BatchStats()
        self._on_batch = on_batch
        # Shared by the event loop and the inference thread; changed only under ``_ready``'s lock.
        self._ready = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._queued = 0  # texts waiting, not yet in a batch
        self._in_model = 0  # batches taken whose results the event loop has not delivered yet
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def unavailable(self) -> str | None:
        """Why the engine cannot take requests just now, or None when it can."""
        return None

    @property
    def unavailable_since(self) -> float | None:
        """``time.monotonic()`` when the engine lost its model, or None while it has one."""
        return None

    @property
    def saturated(self) -> bool:
        return self._queued >= self.max_queue_texts

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the inference thread; requests still queued fail with ``RuntimeError``."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        with self._ready:
            left, self._jobs, self._queued = list(self._jobs), deque(), 0
        for job in left:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the batching engine stopped"))
        s = self.stats
        log.info("batcher: %d texts in %d batches (mean %.1f)", s.texts, s.batches, s.mean_batch_size)

    async def use(self, predictor: Predictor, checkpoint: Path) -> None:
        """Serve ``predictor`` (loaded from ``checkpoint``) from the next batch on: the hot-reload swap."""
        self.predictor = predictor

    async def drain(self) -> None:
        """Wait until every accepted text has its result."""
        while not self._is_idle():
            self._idle.clear()
            await self._idle.wait()

    async def submit(self, texts: Sequence[str]) -> list[Prediction]:
        """Predict ``texts``; raises ``QueueFull`` at once when the queue has no room for them."""
        if not texts:
            return []
        job = Job(texts, asyncio.get_running_loop().create_future())
        with self._ready:
            if self._queued + len(texts) > self.max_queue_texts:
                raise QueueFull(f"{self._queued} texts already queued (limit {self.max_queue_texts})")
            self._jobs.append(job)
            self._queued += len(texts)
            self._ready.notify()
        self._enqueued()
        try:
            return await job.future
        finally:
            job.abandoned = True  # cancelled or timed out: the thread drops what is still queued

    def _enqueued(self) -> None:
        """A request was queued (the inference thread has been notified; subclasses may act)."""

    def _is_idle(self) -> bool:
        with self._ready:
            return not self._jobs and not self._in_model

    # -- inference thread ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                self._wait_to_fill()
                batch = self._take_batch()
                self._in_model += 1
            self._run_batch(batch)

    def _wait_to_fill(self) -> None:
        """With ``max_wait_ms`` set, give a batch that is not full that long to fill (lock held)."""
        deadline = time.monotonic() + self.max_wait
        while self._queued < self.max_batch_size and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ready.wait(left)

    def _take_batch(self) -> list[Slice]:
        """Up to ``max_batch_size`` texts, an equal share from each waiting request in turn."""
        batch: list[Slice] = []
        room = self.max_batch_size
        share = max(1, room // max(1, len(self._jobs)))
        while room and self._jobs:
            job = self._jobs.popleft()
            if job.abandoned:  # cancelled, timed out or failed: drop what it still has queued
                self._queued -= job.remaining
                job.taken = len(job.texts)
                continue
            n = min(share, room, job.remaining)
            batch.append((job, job.taken, job.taken + n))
            job.taken += n
            self._queued -= n
            room -= n
            if job.remaining:
                self._jobs.append(job)
        return batch

    def _run_batch(self, batch: list[Slice]) -> None:
        predictor, start = self.predictor, time.perf_counter()
        outcome = predict_slices(predictor, batch)
        seconds = time.perf_counter() - start
        size = sum(b - a for _, a, b in batch)
        self.stats.batches += bool(size)
        self.stats.texts += size
        self.stats.inference_seconds += seconds
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, batch, outcome, size, seconds)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            with self._ready:
                self._in_model -= 1

    # -- event loop: results back to their requests ----------------------------------------------

    def _deliver(
        self, batch: list[Slice], outcome: list[list[Prediction] | BaseException], size: int, seconds: float
    ) -> None:
        for (job, a, b), result in zip(batch, outcome, strict=True):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.abandoned = True
                job.future.set_exception(result)
                continue
            for i, prediction in zip(job.order[a:b], result, strict=True):
                job.results[i] = prediction
            job.done += b - a
            if job.done == len(job.texts):
                job.future.set_result(job.results)  # type: ignore[arg-type]
        with self._ready:
            self._in_model -= 1
        if self._is_idle():
            self._idle.set()
        if size and self._on_batch is not None:
            self._on_batch(size, seconds)


def predict_slices(predictor: Predictor, batch: list[Slice]) -> list[list[Prediction] | BaseException]:
    """Each slice's predictions from one forward pass; if it fails, each slice alone, so that a bad
    request fails only itself."""
    texts = [job.texts[i] for job, a, b in batch for i in job.order[a:b]]
    try:
        results = predictor.predict(texts) if texts else []
    except Exception:
        log.exception("batch of %d texts failed; retrying its requests one by one", len(texts))
        return [_predict_alone(predictor, job, a, b) for job, a, b in batch]
    outcome: list[list[Prediction] | BaseException] = []
    k = 0
    for _, a, b in batch:
        outcome.append(results[k : k + b - a])
        k += b - a
    return outcome


def _predict_alone(predictor: Predictor, job: Job, a: int, b: int) -> list[Prediction] | BaseException:
    try:
        return predictor.predict([job.texts[i] for i in job.order[a:b]])
    except Exception as exc:
        return exc


class DirectRunner(Batcher):
    """Batching off: one forward pass per request, requests running side by side in threads."""

    def __init__(
        self,
        predictor: Predictor,
        max_queue_texts: int = 4096,
        threads: int = 4,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        super().__init__(predictor, max_queue_texts=max_queue_texts, on_batch=on_batch)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self._in_flight = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._pool.shutdown(wait=True)

    async def drain(self) -> None:
        while self._in_flight:
            await asyncio.sleep(0.01)

    async def submit(self, texts: Sequence[str]) -> list[Prediction]:
        if self._queued + len(texts) > self.max_queue_texts:
            raise QueueFull(f"{self._queued} texts already in flight (limit {self.max_queue_texts})")
        self._queued += len(texts)
        self._in_flight += 1
        start = time.perf_counter()
        try:
            predictor = self.predictor
            return await asyncio.get_running_loop().run_in_executor(self._pool, predictor.predict, texts)
        finally:
            self._queued -= len(texts)
            self._in_flight -= 1
            self._record(len(texts), time.perf_counter() - start)

    def _record(self, size: int, seconds: float) -> None:
        self.stats.batches += 1
        self.stats.texts += size
        self.stats.inference_seconds += seconds
        if self._on_batch is not None:
            self._on_batch(size, seconds)
