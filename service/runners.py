"""Runners turn a batch of texts into each request's probabilities: in a thread, or in a child process.

The child process shares no GIL with the event loop: in one process the inference thread needs the GIL
back after every call that releases it while a busy event loop holds it. Batches go to the child over a
pipe as JSON and come back as float32 probabilities and truncation flags (never pickle); a second thread
there tokenises the next batch while the forward pass runs. This module also builds the ``Predictor``
and sets up a process to run it, for the server and the child alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoint import Checkpoint, load_checkpoint
from model.predictor import Predictor, configure_threads
from model.tokenizer import Batch
from service.engine import Engine, EngineUnavailable, Part, Runner, Scheduler
from service.observability import configure_logging
from service.settings import Settings

log = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0
UNBATCHED_THREADS = 4  # with batching off, requests that run side by side
# A batch this small that finds the child idle runs in the server instead: a lone client skips two hops
# between processes, which otherwise make batching slower than no batching at concurrency 1.
LOCAL_TEXTS = 4
_OK, _FAILED = b"\x00", b"\x01"


def configure_process(settings: Settings) -> None:
    """Set up a process that serves the model: the server and its model process alike."""
    # One batch is tokenised at a time: tokenizers' own thread pool only waits for busy cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    configure_threads(settings.torch_threads, settings.workers)
    # A Python stretch in one thread holds another back at most this long (Python's default: 5 ms).
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    if not logging.getLogger().handlers:  # not yet set up (by ``python -m service``, or by a test)
        configure_logging(settings.log_level, settings.log_format)


def build_predictor(settings: Settings, checkpoint: Path | Checkpoint) -> Predictor:
    loaded = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    return Predictor(
        loaded,
        device=settings.device,
        batch_size=settings.max_batch_size,
        quantize=settings.quantize,
        torchscript=settings.torchscript,
    )


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


def compute(
    predictor: Predictor, texts: list[str], sizes: list[int], encoded: Batch | None = None
) -> list[Part]:
    """Each request's part of one forward pass; if it fails, each part alone, so that a bad request
    fails only itself. ``encoded``: the texts already tokenised."""
    bounds = _bounds(sizes)
    try:
        if encoded is None:
            probabilities, truncated = predictor.predict_proba(texts)
        else:
            probabilities = predictor.probabilities(encoded.ids, encoded.lengths)
            truncated = encoded.truncated
    except Exception:
        log.exception("batch of %d texts failed; retrying its requests one by one", len(texts))
        return [_alone(predictor, texts[a:b]) for a, b in bounds]
    return [(probabilities[a:b], truncated[a:b]) for a, b in bounds]


def _alone(predictor: Predictor, texts: list[str]) -> Part:
    try:
        return predictor.predict_proba(texts)
    except Exception as exc:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _bounds(sizes: list[int]) -> list[tuple[int, int]]:
    ends = list(itertools.accumulate(sizes))
    return list(zip([0, *ends], ends, strict=False))


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

    def run(self, texts: list[str], sizes: list[int]) -> asyncio.Future[list[Part]]:
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
        self._pending: deque[tuple[asyncio.Future[list[Part]], list[int]]] = deque()
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
        process, conn, ready = spawned
        return cls(process, conn, ready["labels"], ready["version"], local)

    def run(self, texts: list[str], sizes: list[int]) -> asyncio.Future[list[Part]]:
        if len(texts) <= LOCAL_TEXTS and not self._pending and not self._local_busy:
            self._local_busy = True
            future = self.local.run(texts, sizes)
            future.add_done_callback(lambda _: setattr(self, "_local_busy", False))
            return future
        # The child's receiving thread reads each batch at once: the pipe takes it without waiting,
        # except for a batch far over its buffer (~200 kB), briefly.
        self._conn.send_bytes(json.dumps([texts, sizes]).encode())
        future = self._loop.create_future()
        self._pending.append((future, sizes))
        return future

    def _readable(self) -> None:
        try:
            reply = self._conn.recv_bytes()
        except (EOFError, OSError):  # the child exited
            self._loop.remove_reader(self._conn.fileno())
            self.on_lost()
            return
        future, sizes = self._pending.popleft()
        try:
            future.set_result(decode(reply, sizes, len(self.labels)))
        except Exception as exc:
            future.set_exception(exc)

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


def encode(parts: list[Part]) -> bytes:
    """The child's answer: the probabilities' float32 bytes and the truncation flags, or, when any part
    failed, JSON with each part's probabilities or error."""
    if any(isinstance(p, BaseException) for p in parts):
        each = [
            {"error": str(p)} if isinstance(p, BaseException) else {"p": p[0].tolist(), "truncated": p[1]}
            for p in parts
        ]
        return _FAILED + json.dumps(each).encode()
    probabilities = np.concatenate([p[0] for p in parts])  # type: ignore[index]
    flags = bytes(flag for p in parts for flag in p[1])  # type: ignore[index]
    return _OK + np.ascontiguousarray(probabilities, np.float32).tobytes() + flags


def decode(reply: bytes, sizes: list[int], labels: int) -> list[Part]:
    if reply[:1] == _OK:
        n = sum(sizes)
        probabilities = np.frombuffer(reply, np.float32, n * labels, offset=1).reshape(n, labels)
        truncated = [flag == 1 for flag in reply[1 + 4 * n * labels :]]
        if len(truncated) != n:
            raise ValueError(f"{len(truncated)} truncation flags for {n} texts")
        return [(probabilities[a:b], truncated[a:b]) for a, b in _bounds(sizes)]
    return [
        RuntimeError(e["error"]) if "error" in e else (np.asarray(e["p"], np.float32), e["truncated"])
        for e in json.loads(reply[1:])
    ]


def _spawn(settings: Settings, path: Path) -> tuple[BaseProcess, Connection, dict[str, Any]]:
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
        ready = parent.recv_bytes()
    except (EOFError, OSError) as exc:
        process.join(5)
        raise EngineUnavailable(f"the model process exited at start (code {process.exitcode})") from exc
    if ready[:1] != _OK:
        process.join(5)
        raise EngineUnavailable(f"the model process failed to start: {ready[1:].decode()}")
    return process, parent, json.loads(ready[1:])


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
        conn.send_bytes(_FAILED + f"{type(exc).__name__}: {exc}".encode())
        return
    ready = {"labels": predictor.labels, "version": predictor.checkpoint.version}
    conn.send_bytes(_OK + json.dumps(ready).encode())
    serve(conn, predictor)


def serve(conn: Connection, predictor: Predictor) -> None:
    """Answer each batch on ``conn`` until it closes, tokenising the next while this one runs."""
    ready: queue.SimpleQueue[tuple[list[str], list[int], Batch | None] | None] = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(conn, predictor, ready), name="tokenizer", daemon=True).start()
    while (item := ready.get()) is not None:
        try:
            conn.send_bytes(encode(compute(predictor, *item)))
        except OSError:
            return


def _receive(conn: Connection, predictor: Predictor, ready: queue.SimpleQueue[Any]) -> None:
    while True:
        try:
            texts, sizes = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            ready.put(None)
            return
        encoded = None  # more than one forward pass's worth: the forward pass tokenises it in parts
        if len(texts) <= predictor.batch_size:
            with contextlib.suppress(Exception):  # compute then meets the failure and reports it per request
                encoded = predictor.checkpoint.tokenizer.encode(texts)
        ready.put((texts, sizes, encoded))
