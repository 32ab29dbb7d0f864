"""The batching engine between the HTTP handlers and the model.

Requests put their texts in a bounded queue and await a future. One worker forms batches from
whatever is waiting (round-robin across requests, so a large request cannot starve small ones),
runs the model in an inference thread, off the event loop, and hands each request its results in
input order. While the model is busy, new requests pile up and become the next batch; when it is
idle, a request runs at once (``max_wait_ms=0``), so a lone client never waits for company.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from model.predictor import Prediction, Predictor

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """More texts are waiting than the queue holds; the caller should retry later."""


@dataclass(eq=False)
class _Job:
    texts: Sequence[str]
    future: asyncio.Future[list[Prediction]]
    results: list[Prediction | None] = field(default_factory=list)
    taken: int = 0  # texts already handed to a batch
    done: int = 0  # texts with a result

    def __post_init__(self) -> None:
        self.results = [None] * len(self.texts)

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.taken


Slice = tuple[_Job, int, int]  # a job's texts [start, stop) inside one batch


@dataclass
class BatchStats:
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
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # texts waiting, not yet in a batch
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def saturated(self) -> bool:
        return self._queued >= self.max_queue_texts

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def drain(self) -> None:
        """Wait until every accepted text has its result."""
        while self._jobs or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def submit(self, texts: Sequence[str]) -> list[Prediction]:
        """Predict ``texts``; raises ``QueueFull`` at once when the queue has no room for them."""
        if self._queued + len(texts) > self.max_queue_texts:
            raise QueueFull(f"{self._queued} texts already queued (limit {self.max_queue_texts})")
        job = _Job(texts, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued += len(texts)
        self._idle.clear()
        self._wakeup.set()
        return await job.future  # a cancelled await marks the future done: the worker skips the rest

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if self.max_wait and self._queued < self.max_batch_size:
                await asyncio.sleep(self.max_wait)
            batch = self._take_batch()
            if not batch:
                self._wakeup.clear()
                self._idle.set()
                continue
            texts = [t for job, a, b in batch for t in job.texts[a:b]]
            predictor, start = self.predictor, time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, predictor.predict, texts)
            except Exception:
                log.exception("batch of %d texts failed; retrying its requests one by one", len(texts))
                await self._isolate(batch, predictor)
            else:
                self._deliver(batch, results)
            self._record(len(texts), time.perf_counter() - start)

    def _take_batch(self) -> list[Slice]:
        """Up to ``max_batch_size`` texts, an equal share from each waiting request in turn."""
        batch: list[Slice] = []
        room = self.max_batch_size
        share = max(1, room // max(1, len(self._jobs)))
        while room and self._jobs:
            job = self._jobs.popleft()
            if job.future.done():  # cancelled or timed out: drop what it still had queued
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

    def _deliver(self, batch: list[Slice], results: Sequence[Prediction]) -> None:
        k = 0
        for job, a, b in batch:
            job.results[a:b] = results[k : k + b - a]
            k += b - a
            job.done += b - a
            if job.done == len(job.texts) and not job.future.done():
                job.future.set_result(job.results)  # type: ignore[arg-type]

    async def _isolate(self, batch: list[Slice], predictor: Predictor) -> None:
        """Rerun each request's part alone, so one bad request fails only itself."""
        loop = asyncio.get_running_loop()
        for job, a, b in batch:
            if job.future.done():
                continue
            try:
                results = await loop.run_in_executor(self._executor, predictor.predict, job.texts[a:b])
            except Exception as exc:
                job.future.set_exception(exc)
                self._queued -= job.remaining
                job.taken = len(job.texts)
            else:
                self._deliver([(job, a, b)], results)

    def _record(self, size: int, seconds: float) -> None:
        self.stats.batches += 1
        self.stats.texts += size
        self.stats.inference_seconds += seconds
        if self._on_batch is not None:
            self._on_batch(size, seconds)


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
