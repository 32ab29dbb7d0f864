"""The batching engine between the HTTP handlers and the model.

Requests queue their texts and await their predictions. The ``Scheduler`` (plain data: no threads, no
clock) makes each batch of an equal share of every waiting request, each request's texts shortest first:
a large request is interleaved with small ones instead of starving them, and a slice holds texts of
similar length for the packed LSTM. The ``Engine`` keeps a runner (``service.runners``) busy, starts it
again when it dies, and switches to a reloaded one between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from model.predictor import Prediction, to_predictions

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (0.5, 30.0)  # first wait between failed starts of a runner, and the longest


class Answer(NamedTuple):
    """A runner's answer to one batch: each text's probabilities (n, L) and truncation flag, and the
    error of each request that failed, by its place among the batch's ``sizes`` (its rows are unread)."""

    probabilities: np.ndarray
    truncated: list[bool]
    errors: dict[int, str]


def failed(requests: int, error: str) -> Answer:
    return Answer(np.empty((0, 0), np.float32), [], dict.fromkeys(range(requests), error))


class QueueFull(RuntimeError):
    """More texts are waiting than the queue holds; the caller should retry later."""


class EngineUnavailable(RuntimeError):
    """The model cannot take requests just now (its process is restarting); retry shortly."""


class Runner(Protocol):
    """Turns batches of texts into probabilities; ``sizes`` are the requests' shares of a batch."""

    labels: list[str]
    version: str
    on_lost: Callable[[], None]  # called if the runner dies (its pending batches never answer)

    def run(self, texts: list[str], sizes: list[int]) -> asyncio.Future[Answer]: ...

    async def close(self) -> None: ...


class Job:
    """One request: its texts, shortest first, and how far the batches got."""

    __slots__ = ("abandoned", "done", "future", "order", "results", "taken", "texts")

    def __init__(self, texts: Sequence[str], future: Any = None) -> None:
        self.texts = texts
        self.future = future
        n = len(texts)
        self.order: list[int] = [0] if n == 1 else sorted(range(n), key=[len(t) for t in texts].__getitem__)
        self.results: list[Prediction | None] = [None] * n
        self.taken = 0  # texts of ``order`` already in a batch
        self.done = 0  # texts with a result
        self.abandoned = False  # cancelled, timed out or failed: its answers are no longer wanted

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.taken


Slice = tuple[Job, int, int]  # positions [start, stop) of a job's ``order`` inside one batch


class Scheduler:
    """The queue: which texts form the next batch. ``whole``: one whole request per batch (batching off)."""

    def __init__(self, max_batch_size: int, max_queue_texts: int, max_wait_s: float, whole: bool) -> None:
        self.max_batch_size, self.max_queue_texts = max_batch_size, max_queue_texts
        self.max_wait_s, self.whole = max_wait_s, whole
        self.jobs: deque[Job] = deque()  # requests with texts not yet in a batch
        self.queued = 0  # their texts
        self.since = 0.0  # when the queue last went from empty to not

    def add(self, job: Job, now: float) -> None:
        if self.queued + len(job.texts) > self.max_queue_texts:
            raise QueueFull(f"{self.queued} texts already queued (limit {self.max_queue_texts})")
        if not self.queued:
            self.since = now
        self.jobs.append(job)
        self.queued += len(job.texts)

    def wait(self, now: float) -> float:
        """Seconds to let a batch that is not full fill up (``max_wait_ms``) before it is taken."""
        if self.queued >= self.max_batch_size or self.whole:
            return 0.0
        return max(0.0, self.since + self.max_wait_s - now)

    def take(self, begun_only: bool = False) -> list[Slice]:
        """Up to ``max_batch_size`` texts, an equal share of each waiting request in turn; ``begun_only``:
        only of requests already partly in a batch (before a model swap)."""
        batch: list[Slice] = []
        room = self.max_batch_size
        share = max(1, room // max(1, len(self.jobs)))
        for _ in range(len(self.jobs)):
            if not room:
                break
            job = self.jobs.popleft()
            if begun_only and not job.taken:
                self.jobs.append(job)
                continue
            n = job.remaining if self.whole else min(share, room, job.remaining)
            batch.append((job, job.taken, job.taken + n))
            job.taken += n
            self.queued -= n
            room = 0 if self.whole else room - n
            if job.remaining:
                self.jobs.append(job)
        return batch

    def drop(self, job: Job) -> None:
        """Abandon a request: its texts still queued leave the queue, its answers are ignored."""
        job.abandoned = True
        if job.remaining and job in self.jobs:  # not in it after ``clear``
            self.jobs.remove(job)
            self.queued -= job.remaining
            job.taken = len(job.texts)

    def begun(self) -> bool:
        """Whether a request has texts both in a batch and still in the queue."""
        return any(job.taken for job in self.jobs)

    def clear(self) -> list[Job]:
        jobs, self.jobs, self.queued = list(self.jobs), deque(), 0
        return jobs

    def complete(
        self, batch: list[Slice], answer: Answer, labels: list[str]
    ) -> list[tuple[Job, Exception | None]]:
        """Record each slice's answer; returns the jobs now finished, with the error of those that failed."""
        finished: list[tuple[Job, Exception | None]] = []
        stop = 0
        for k, (job, a, b) in enumerate(batch):
            start, stop = stop, stop + b - a
            if job.abandoned:
                continue
            if k in answer.errors:
                self.drop(job)
                finished.append((job, RuntimeError(answer.errors[k])))
                continue
            rows = answer.probabilities[start:stop], answer.truncated[start:stop]
            for i, prediction in zip(job.order[a:b], to_predictions(labels, *rows), strict=True):
                job.results[i] = prediction
            job.done += b - a
            if job.done == len(job.texts):
                finished.append((job, None))
        return finished


@dataclass
class Result:
    predictions: list[Prediction]
    version: str  # of the model that computed every one of them: a swap waits for begun requests


class Engine:
    """Requests in, batches through a runner, predictions out; ``start_runner(path)`` makes runners.

    Up to ``depth`` batches are in the runner: the one it computes and the next, sent ahead once half a
    batch waits, so that the runner never waits for a busy event loop. An idle runner gets a request at
    once (unless ``max_wait_ms``): a lone client never waits for company."""

    def __init__(
        self,
        start_runner: Callable[[Path], Awaitable[Runner]],
        checkpoint: Path,
        scheduler: Scheduler,
        depth: int = 2,
        on_batch: Callable[[int, float], None] = lambda size, seconds: None,
        on_restart: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.start_runner, self.checkpoint, self.scheduler = start_runner, checkpoint, scheduler
        self.depth, self.on_batch, self.on_restart = depth, on_batch, on_restart
        self.stats = Counter[str]()  # "batches" and "texts" since start (``GET /metrics`` has histograms)
        self.runner: Runner | None = None
        self.unavailable_since: float | None = None  # ``time.monotonic()`` when the runner was lost
        self._failure: str | None = None  # why the runner could not be started again
        self._next: tuple[Runner, Path] | None = None  # a reload waiting for the old runner to finish
        self._in_flight: dict[int, tuple[list[Slice], float]] = {}  # by id: each batch, when it was sent
        self._done_at = 0.0
        self._ahead = 1 if scheduler.whole else max(1, scheduler.max_batch_size // 2)
        self._timer: asyncio.TimerHandle | None = None
        self._restart: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._stopping = False

    @property
    def unavailable(self) -> str | None:
        """Why the engine cannot take requests just now, or None when it can."""
        if self._failure is None and self.runner is None and not self._stopping:
            return "the model process is restarting"
        return self._failure

    async def start(self) -> None:
        self._attach(await self.start_runner(self.checkpoint))

    async def submit(self, texts: Sequence[str]) -> Result:
        """Predict ``texts``; raises ``QueueFull`` at once when the queue has no room for them."""
        if self._failure is not None:
            raise EngineUnavailable(self._failure)
        if self._stopping:
            raise RuntimeError("the batching engine stopped")
        job = Job(texts, asyncio.get_running_loop().create_future())
        self.scheduler.add(job, time.monotonic())
        self._dispatch()
        try:
            return await job.future  # type: ignore[no-any-return]
        finally:
            if job.remaining:  # cancelled or timed out: what is still queued is dropped
                self.scheduler.drop(job)
                self._set_idle()

    async def swap(self, runner: Runner, checkpoint: Path) -> None:
        """Serve ``runner`` (started on ``checkpoint``) once the old one has finished what it began."""
        if self._next is not None:  # two reloads in a row: the later one wins
            await self._next[0].close()
        self._next = (runner, checkpoint)
        if self.runner is None:  # down: nothing to finish first
            self._switch()
        self._dispatch()

    async def drain(self) -> None:
        """Wait until every accepted text has its result."""
        while self.scheduler.queued or self._in_flight:
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        """Fail what is still queued, let the batches in the runner finish, close it."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        self._fail(self.scheduler.clear(), RuntimeError("the batching engine stopped"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), 5)
        for runner in (self.runner, self._next[0] if self._next else None):
            if runner is not None:  # its loss while closing is ignored: the engine is stopping
                await runner.close()
        log.info("engine: %d texts in %d batches", self.stats["texts"], self.stats["batches"])

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.runner is not None and not self._stopping and len(self._in_flight) < self.depth:
            if self._next is not None and not self.scheduler.begun():
                if self._in_flight:
                    return  # the old runner still answers what it began
                self._switch()
            if not self.scheduler.queued or (self._in_flight and self.scheduler.queued < self._ahead):
                break
            if not self._in_flight and (wait := self.scheduler.wait(time.monotonic())) > 0:
                self._timer = asyncio.get_running_loop().call_later(wait, self._dispatch)
                return
            batch = self.scheduler.take(begun_only=self._next is not None)
            if not batch:
                break
            self._send(batch, self.runner)
        self._set_idle()

    def _send(self, batch: list[Slice], runner: Runner) -> None:
        texts = [job.texts[i] for job, a, b in batch for i in job.order[a:b]]
        self._in_flight[id(batch)] = (batch, time.perf_counter())
        try:
            future = runner.run(texts, [b - a for _, a, b in batch])
        except Exception as exc:  # nothing was sent, so no answer will come for this batch
            log.exception("could not send a batch of %d texts to the model", len(texts))
            future = asyncio.get_running_loop().create_future()
            future.set_result(failed(len(batch), f"could not send it to the model: {exc}"))
        future.add_done_callback(lambda f: self._answered(batch, runner, f))

    def _answered(self, batch: list[Slice], runner: Runner, future: asyncio.Future[Answer]) -> None:
        entry = self._in_flight.pop(id(batch), None)
        if entry is None:  # failed already: its runner was lost
            return
        now = time.perf_counter()
        seconds = now - max(entry[1], self._done_at)  # its own time, not its wait behind the one before
        self._done_at = now
        size = sum(b - a for _, a, b in batch)
        self.stats["batches"] += 1
        self.stats["texts"] += size
        try:
            finished = self.scheduler.complete(batch, future.result(), runner.labels)
        except Exception as exc:  # the whole batch fails, also a request already failed or done in it
            log.exception("unreadable answer from the model for a batch of %d texts", size)
            bad = RuntimeError(f"unreadable answer from the model: {exc!r}")
            finished = [(job, bad) for job, _, _ in batch]
            for job, _ in finished:
                self.scheduler.drop(job)
        for job, error in finished:
            if job.future.done():
                continue
            if error is None:
                job.future.set_result(Result(job.results, runner.version))  # type: ignore[arg-type]
            else:
                job.future.set_exception(error)
        self.on_batch(size, seconds)
        self._dispatch()

    def _attach(self, runner: Runner) -> None:
        self.runner, self.unavailable_since, self._failure = runner, None, None
        runner.on_lost = lambda: self._lost(runner)

    def _switch(self) -> None:
        assert self._next is not None
        old, (runner, self.checkpoint) = self.runner, self._next
        self._next = None
        self._attach(runner)
        if old is not None:  # its loss while closing is ignored: it is no longer ``self.runner``
            asyncio.get_running_loop().create_task(old.close())

    def _lost(self, runner: Runner) -> None:
        """The runner died: fail the batches it held (503) and start another."""
        if runner is not self.runner or self._stopping:
            return
        log.error("the model process exited; starting another")
        self.runner, self.unavailable_since = None, time.monotonic()
        asyncio.get_running_loop().create_task(runner.close())
        lost = [job for batch, _ in self._in_flight.values() for job, _, _ in batch]
        self._in_flight.clear()
        self._fail(lost, EngineUnavailable("the model process exited while computing this request"))
        if self._next is not None:  # a reload was waiting for it: the new runner takes over now
            self._switch()
            self._dispatch()
        elif self._restart is None:
            self._restart = asyncio.get_running_loop().create_task(self._start_again())
        self._set_idle()

    async def _start_again(self) -> None:
        """Start a runner again, with backoff, for as long as it fails: a failure that heals (memory
        freed, a file back) then needs no one. Meanwhile requests get 503 at once."""
        delay = RESTART_BACKOFF_S[0]
        try:
            while self.runner is None and not self._stopping:
                try:
                    runner = await self.start_runner(self.checkpoint)
                except Exception as exc:  # EngineUnavailable, or the system refusing a process (OSError)
                    self._failure = f"the model process exited and could not be started again: {exc}"
                    log.error("%s; trying again in %.1f s", self._failure, delay)
                    self.on_restart("failed")
                    self._fail(self.scheduler.clear(), EngineUnavailable(self._failure))
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RESTART_BACKOFF_S[1])
                    continue
                if self.runner is not None or self._stopping:  # a reload took over meanwhile
                    await runner.close()
                    return
                self.on_restart("started")
                log.info("the model process is running again")
                self._attach(runner)
        finally:
            self._restart = None
        self._dispatch()

    def _fail(self, jobs: list[Job], error: BaseException) -> None:
        for job in jobs:
            self.scheduler.drop(job)
            if not job.future.done():
                job.future.set_exception(error)

    def _set_idle(self) -> None:
        if not self.scheduler.queued and not self._in_flight:
            self._idle.set()
