"""Runners turn a batch of texts into probabilities: in a thread here, or in a child process.

The child process shares no GIL with the event loop: in one process the inference thread needs the GIL
back after every call that releases it while a busy event loop holds it. Both ends of its pipe are
``multiprocessing.connection``: batches go as lists of texts and come back as an ``Answer``, pickled
(only this program's two processes hold the pipe); a second thread there tokenises the next batch while
the forward pass runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from model.predictor import Predictor
from model.tokenizer import Batch
from service.engine import Answer, Engine, EngineUnavailable, Runner, Scheduler
from service.settings import Settings
from service.startup import build_predictor, configure_process

log = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0
UNBATCHED_THREADS = 4  # with batching off, requests that run side by side
# A batch this small that finds the child idle runs in the server instead: a lone client skips two hops
# between processes, which otherwise make batching slower than no batching at concurrency 1.
LOCAL_TEXTS = 4


def make_engine(
    settings: Settings,
    on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    on_restart: Callable[[str], None] = lambda outcome: None,
) -> Engine:
    """The engine the settings ask for: batching in a child process, in a thread, or off."""
    threads = 1 if settings.batching else UNBATCHED_THREADS

    async def start(path: Path) -> Runner:
        if settings.batching and settings.model_process:
            return await ProcessRunner.start(settings, path)
        return await ThreadRunner.start(settings, path, threads)

    wait_s = settings.max_wait_ms / 1000
    scheduler = Scheduler(settings.max_batch_size, settings.max_queue_texts, wait_s, not settings.batching)
    depth = 2 if settings.batching else threads  # with batching: one batch computing, the next waiting
    return Engine(start, settings.checkpoint, scheduler, depth, on_batch, on_restart)


def compute(predictor: Predictor, texts: list[str], sizes: list[int], encoded: Batch | None = None) -> Answer:
    """One forward pass over a batch of requests of ``sizes`` texts; if it fails, each request alone, so
    that a bad request fails only itself. ``encoded``: the texts already tokenised."""
    try:
        if encoded is None:
            probabilities, truncated = predictor.predict_proba(texts)
            return Answer(probabilities, truncated, {})
        return Answer(predictor.probabilities(encoded.ids, encoded.lengths), encoded.truncated, {})
    except Exception:
        log.exception("batch of %d texts failed; retrying its requests one by one", len(texts))
    answer = Answer(np.zeros((len(texts), len(predictor.labels)), np.float32), [False] * len(texts), {})
    ends = list(itertools.accumulate(sizes))
    for k, (a, b) in enumerate(zip([0, *ends], ends, strict=False)):
        try:
            answer.probabilities[a:b], answer.truncated[a:b] = predictor.predict_proba(texts[a:b])
        except Exception as exc:
            answer.errors[k] = f"{type(exc).__name__}: {exc}"
    return answer


class ThreadRunner:
    """The model in this process, in ``threads`` worker threads."""

    def __init__(self, predictor: Predictor, threads: int = 1) -> None:
        self.predictor = predictor
        self.labels, self.version = predictor.labels, predictor.checkpoint.version
        self.on_lost: Callable[[], None] = lambda: None  # a thread does not die on its own
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inference")

    @classmethod
    async def start(cls, settings: Settings, path: Path, threads: int = 1) -> ThreadRunner:
        return cls(await asyncio.to_thread(build_predictor, settings, path), threads)

    def run(self, texts: list[str], sizes: list[int]) -> asyncio.Future[Answer]:
        return asyncio.get_running_loop().run_in_executor(self._pool, compute, self.predictor, texts, sizes)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown)


class ProcessRunner:
    """The model in a child process, whose answers the event loop reads as the pipe becomes readable;
    ``local``: the same model in a thread here, for a small batch that finds the child idle."""

    def __init__(
        self, process: BaseProcess, conn: Connection, labels: list[str], version: str, local: ThreadRunner
    ) -> None:
        self.process, self.labels, self.version, self.local = process, labels, version, local
        self.on_lost: Callable[[], None] = lambda: None
        self._conn = conn
        self._pending: deque[asyncio.Future[Answer]] = deque()
        self._local_busy = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(conn.fileno(), self._readable)

    @classmethod
    async def start(cls, settings: Settings, path: Path) -> ProcessRunner:
        """Spawn it and wait until its model is loaded; ``EngineUnavailable`` if it cannot start."""
        spawned, local = await asyncio.gather(
            asyncio.to_thread(_spawn, settings, path),
            ThreadRunner.start(settings, path),
            return_exceptions=True,
        )
        if isinstance(spawned, BaseException):
            if not isinstance(local, BaseException):
                await local.close()
            raise spawned
        if isinstance(local, BaseException):
            spawned[0].kill()
            raise EngineUnavailable(f"{local}")
        process, conn, (labels, version) = spawned
        return cls(process, conn, labels, version, local)

    def run(self, texts: list[str], sizes: list[int]) -> asyncio.Future[Answer]:
        if len(texts) <= LOCAL_TEXTS and not self._pending and not self._local_busy:
            self._local_busy = True
            future = self.local.run(texts, sizes)
            future.add_done_callback(lambda _: setattr(self, "_local_busy", False))
            return future
        # The child's receiving thread reads each batch at once: the pipe takes it without waiting,
        # except for a batch far over its buffer (~200 kB), briefly.
        self._conn.send((texts, sizes))
        future = self._loop.create_future()
        self._pending.append(future)
        return future

    def _readable(self) -> None:
        try:
            answer = self._conn.recv()
        except (EOFError, OSError):  # the child exited
            self._loop.remove_reader(self._conn.fileno())
            self.on_lost()
            return
        except Exception as exc:  # read whole but not unpickled: only this batch is lost
            self._pending.popleft().set_exception(exc)
            return
        self._pending.popleft().set_result(answer)

    async def close(self) -> None:
        """Close the pipe (the child exits when it reads EOF); kill it if it lingers."""
        await self.local.close()
        if not self._conn.closed:
            self._loop.remove_reader(self._conn.fileno())
            self._conn.close()
        await asyncio.to_thread(self.process.join, 5)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)


def _spawn(settings: Settings, path: Path) -> tuple[BaseProcess, Connection, tuple[list[str], str]]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
    parent, child = context.Pipe()
    process = context.Process(
        target=_child, args=(child, settings, path), name="sentiment-model", daemon=True
    )
    process.start()
    child.close()  # the parent's copy: with it closed, the child's exit reads as EOF here
    try:
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise EngineUnavailable(f"the model process did not start within {START_TIMEOUT_S:.0f} s")
        ready = parent.recv()  # its labels and version, or why it could not load the model
    except (EOFError, OSError) as exc:
        process.join(5)
        raise EngineUnavailable(f"the model process exited at start (code {process.exitcode})") from exc
    except Exception as exc:  # a message that does not unpickle
        process.kill()
        raise EngineUnavailable(f"unreadable start-up message from the model process: {exc!r}") from exc
    if isinstance(ready, str):
        process.join(5)
        raise EngineUnavailable(f"the model process failed to start: {ready}")
    return process, parent, ready


def _child(conn: Connection, settings: Settings, path: Path) -> None:
    """The child process: load the checkpoint, then answer batches until the pipe closes."""
    # Its own session: Ctrl-C or a supervisor's signal to the server's process group is the server's
    # to handle (it drains, then closes this pipe); at exit multiprocessing stops it with SIGTERM.
    os.setsid()
    configure_process(settings)
    try:
        predictor = build_predictor(settings, path)
        predictor.predict(["warm up"])
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send((predictor.labels, predictor.checkpoint.version))
    serve(conn, predictor)


def serve(conn: Connection, predictor: Predictor) -> None:
    """Answer each batch on ``conn`` until it closes, tokenising the next while this one runs."""
    ready: queue.SimpleQueue[tuple[list[str], list[int], Batch | None] | None] = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(conn, predictor, ready), name="tokenizer", daemon=True).start()
    while (item := ready.get()) is not None:
        try:
            conn.send(compute(predictor, *item))
        except OSError:
            return


def _receive(conn: Connection, predictor: Predictor, ready: queue.SimpleQueue[Any]) -> None:
    while True:
        try:
            texts, sizes = conn.recv()
        except Exception:  # EOF: the server closed the pipe. Anything else ends the child too, so that
            ready.put(None)  # the server reads EOF and starts another rather than waiting for ever
            return
        encoded = None  # more than one forward pass's worth: the forward pass tokenises it in parts
        if len(texts) <= predictor.batch_size:
            with contextlib.suppress(Exception):  # compute then meets the failure and reports it per request
                encoded = predictor.checkpoint.tokenizer.encode(texts)
        ready.put((texts, sizes, encoded))
