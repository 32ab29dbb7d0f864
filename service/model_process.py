"""The batching engine with the model in a child process, which shares no GIL with the event loop.

In one process the inference thread needs the GIL back after every call that releases it (the
forward pass, tokenising), while under load the event loop holds it most of the time: each hand-over
waits up to a switch interval, and the two threads' Python work cannot overlap. Here the HTTP process
runs only the event loop and the model process only tokenises and runs forward passes: two
interpreters, two cores busy, no lock between them (README, "Serving performance").

The event loop keeps ``Batcher``'s queue and its rules (round-robin across requests, shortest texts
first, ``max_wait_ms``). Batches go to the model process over a socket as JSON and come back as
float32 probabilities and truncation flags (length-prefixed frames, the framing of
``multiprocessing.connection``; never pickle). Up to two batches are in the model process at once:
the one it computes and the next, sent ahead once half a batch is waiting, so that under load it
never waits for a busy event loop to send more; its tokenizer thread tokenises that next batch while
the forward pass runs. A batch of at most ``HERE_TEXTS`` texts that finds the model process idle runs
in this process instead, in a thread: a lone client skips two hops between processes. A model process
that dies fails only the batches it held (503, retry) and is started again; a hot reload starts a
model process on the new checkpoint and switches to it once the old one has answered.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import socket
import struct
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from model.predictor import Prediction, Predictor, configure_threads
from model.tokenizer import Batch
from service.batching import Batcher, EngineUnavailable, Slice, predict_slices

log = logging.getLogger(__name__)

_OK, _FAILED = b"\x00", b"\x01"
_HEADER = struct.Struct("!i")  # multiprocessing.connection's frame: a signed big-endian length
START_TIMEOUT_S = 300.0
RESTART_BACKOFF_S = (0.5, 30.0)  # first wait between failed starts of the model process, and the longest
HERE_TEXTS = 4  # texts that an idle engine runs in this process rather than in the model process


class _Frames(asyncio.Protocol):
    """The event loop's end of the socket: each length-prefixed frame read goes to ``on_frame``.

    A protocol, not a stream: the loop calls ``data_received`` straight from its reader callback,
    with no task to wake in between.
    """

    def __init__(self) -> None:
        self.on_frame: Callable[[bytes], None] = lambda frame: None
        self.on_lost: Callable[[], None] = lambda: None
        self.closed = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            end = _HEADER.size + size
            if len(buffer) < end:
                return
            frame = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            self.on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_lost()


@dataclass
class ModelProcess:
    """One model process and the event loop's connection to it."""

    process: BaseProcess
    transport: asyncio.Transport
    frames: _Frames

    @classmethod
    async def start(cls, options: dict[str, Any]) -> ModelProcess:
        """Spawn it and wait until its model is loaded; ``EngineUnavailable`` if it cannot start."""
        process, conn = await asyncio.to_thread(_spawn, options)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno()))
        conn.close()
        transport, frames = await asyncio.get_running_loop().create_unix_connection(_Frames, sock=sock)
        return cls(process, transport, frames)  # type: ignore[arg-type]

    def send(self, payload: bytes) -> None:
        """Queue one frame; the transport writes it as the socket takes it, never blocking the loop."""
        self.transport.write(_HEADER.pack(len(payload)) + payload)

    async def close(self) -> None:
        """Close the socket (the model process exits when it reads EOF); kill it if it lingers."""
        self.frames.on_frame, self.frames.on_lost = (lambda frame: None), (lambda: None)
        self.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.frames.closed), 5)
        except TimeoutError:  # it takes nothing more: drop what is unwritten
            self.transport.abort()
        await asyncio.to_thread(self.process.join, 5)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)


_RUNNING: weakref.WeakSet[BaseProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Kill model processes still running at exit (a forced exit skips the engine's ``stop``).

    Registered after multiprocessing's own exit handler, so it runs first: that one would send them
    SIGTERM, which they ignore, and then wait for them for ever.
    """
    for process in list(_RUNNING):
        if process.is_alive():
            process.kill()
            process.join(5)


def _spawn(options: dict[str, Any]) -> tuple[BaseProcess, Connection]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
    parent, child = context.Pipe()  # a Unix socket pair
    process = context.Process(target=_serve, args=(child, options), name="sentiment-model", daemon=True)
    process.start()
    _RUNNING.add(process)
    child.close()  # the parent's copy: with it closed, the child's exit reads as EOF here
    try:
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise EngineUnavailable(f"the model process did not start within {START_TIMEOUT_S:.0f} s")
        ready = parent.recv_bytes()
    except (EOFError, OSError) as exc:
        process.join(5)
        raise EngineUnavailable(f"the model process exited at start (code {process.exitcode})") from exc
    if ready != _OK:
        process.join(5)
        raise EngineUnavailable(f"the model process failed to start: {ready[1:].decode()}")
    return process, parent


class ProcessBatcher(Batcher):
    """``Batcher``'s queue on the event loop, the model in a child process (``start`` spawns it).

    ``predictor``, the parent's copy of the model, names the labels and serves everything besides
    ``/predict`` (explain, model info).
    """

    def __init__(
        self,
        predictor: Predictor,
        checkpoint: str | Path,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        max_queue_texts: int = 4096,
        threads: int = 1,
        quantize: bool = False,
        torchscript: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(predictor, max_batch_size, max_wait_ms, max_queue_texts, on_batch)
        self._on_restart = on_restart or (lambda outcome: None)
        self._down_since: float | None = None  # monotonic time the model process was lost
        self._options: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "device": str(predictor.device),
            "batch_size": max_batch_size,
            "threads": threads,
            "quantize": quantize,
            "torchscript": torchscript,
        }
        self._model: ModelProcess | None = None
        # Batches in the model process, oldest first: the one it computes and perhaps the next.
        self._sent: deque[tuple[list[Slice], Predictor, float]] = deque()
        self._done_at = 0.0  # when the last result came back
        self._ahead = max(1, max_batch_size // 2)  # texts waiting before a second batch is sent
        # A reload waiting for the current model process to answer: the new one, its predictor, options.
        self._next: tuple[ModelProcess, Predictor, dict[str, Any]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._restart: asyncio.Task[None] | None = None
        self._failure: str | None = None  # set when the model process could not be started again
        self._closing: set[asyncio.Task[None]] = set()
        # A small batch that found the model process idle runs here, in a thread (see ``_send``).
        self._here: Future[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="inference")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._attach(await ModelProcess.start(self._options))

    async def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart
        for model in (self._detach(), self._next[0] if self._next else None):
            if model is not None:
                await model.close()
        self._next = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown)
        self._fail_all(RuntimeError("the batching engine stopped"))
        s = self.stats
        log.info("batcher: %d texts in %d batches (mean %.1f)", s.texts, s.batches, s.mean_batch_size)

    async def use(self, predictor: Predictor, checkpoint: Path) -> None:
        """Start a model process on ``checkpoint``; it takes over once the old one has answered."""
        options = {**self._options, "checkpoint": str(checkpoint)}
        model = await ModelProcess.start(options)
        if self._stopping:
            await model.close()
            return
        if self._next is not None:  # two reloads in a row: the later one wins
            self._close_later(self._next[0])
        self._next = (model, predictor, options)
        if self._model is None and self._restart is None:  # it could not be started again: now it is
            self._failure = None
            self._switch()
        self._send()

    @property
    def unavailable_since(self) -> float | None:
        return self._down_since if self._model is None and not self._stopping else None

    @property
    def unavailable(self) -> str | None:
        if self._failure is not None:
            return self._failure
        return "the model process is restarting" if self._model is None and not self._stopping else None

    async def submit(self, texts: Sequence[str]) -> list[Prediction]:
        if self._failure is not None:
            raise EngineUnavailable(self._failure)
        return await super().submit(texts)

    def _enqueued(self) -> None:
        self._send()

    def _is_idle(self) -> bool:
        return not self._jobs and not self._sent and self._here is None

    # -- to the model process ---------------------------------------------------------------------

    def _send(self) -> None:
        """Send the next batch if the model process is idle (or busy, and half a batch waits)."""
        if self._model is None or self._stopping:
            return
        if self._next is not None:  # a reload: once the old model process has answered everything
            if self._sent:
                return
            self._switch()
        if not self._jobs:
            return
        busy = len(self._sent) + (self._here is not None)
        if busy > 1 or (busy and self._queued < self._ahead):
            return
        if not busy and self._queued <= HERE_TEXTS and not self.max_wait:
            self._run_here()
            return
        if self.max_wait and not busy and self._queued < self.max_batch_size:
            if self._timer is None:  # give the batch ``max_wait_ms`` to fill
                assert self._loop is not None
                self._timer = self._loop.call_later(self.max_wait, self._send_now)
            return
        self._send_now()

    def _send_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._model is None or self._stopping or self._next is not None or len(self._sent) > 1:
            return
        batch = self._take_batch()
        if not batch:  # only abandoned requests were waiting
            self._set_idle_if_idle()
            return
        texts = [job.texts[i] for job, a, b in batch for i in job.order[a:b]]
        try:
            frame = json.dumps([texts, [b - a for _, a, b in batch]]).encode()
            self._model.send(frame)
        except Exception as exc:  # nothing was sent, so no reply will come for this batch
            log.exception("could not send a batch of %d texts to the model process", len(texts))
            self._in_model += 1  # ``_deliver`` counts it back down
            self._deliver(batch, [exc] * len(batch), 0, 0.0)
            return
        self._sent.append((batch, self.predictor, time.perf_counter()))

    def _run_here(self) -> None:
        """Run the waiting texts in this process: a lone request skips two hops between processes.

        Only when nothing else is running, so the event loop has little to do meanwhile and the
        inference thread seldom waits for the GIL; under load every batch goes to the model process.
        """
        assert self._loop is not None
        loop, batch, predictor = self._loop, self._take_batch(), self.predictor

        def run() -> None:  # in the thread; hands the outcome straight to the loop
            start = time.perf_counter()
            outcome = predict_slices(predictor, batch)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(self._ran_here, batch, outcome, time.perf_counter() - start)

        self._here = self._pool.submit(run)

    def _ran_here(
        self, batch: list[Slice], outcome: list[list[Prediction] | BaseException], seconds: float
    ) -> None:
        self._here = None
        self._send()
        size = sum(b - a for _, a, b in batch)
        self.stats.batches += 1
        self.stats.texts += size
        self.stats.inference_seconds += seconds
        self._in_model += 1  # ``_deliver`` counts it back down
        self._deliver(batch, outcome, size, seconds)

    def _switch(self) -> None:
        """Put the reloaded model process in place of the current one (nothing in flight)."""
        assert self._next is not None and not self._sent
        model, predictor, self._options = self._next
        self._next = None
        old = self._detach()
        if old is not None:
            self._close_later(old)
        self.predictor = predictor
        self._attach(model)

    def _attach(self, model: ModelProcess) -> None:
        self._model, self._down_since = model, None
        model.frames.on_frame, model.frames.on_lost = self._on_result, self._lost

    def _detach(self) -> ModelProcess | None:
        model, self._model = self._model, None
        if model is not None:  # what it still says is no longer ours
            model.frames.on_frame, model.frames.on_lost = (lambda frame: None), (lambda: None)
        return model

    def _close_later(self, model: ModelProcess) -> None:
        assert self._loop is not None
        task = self._loop.create_task(model.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- from the model process -------------------------------------------------------------------

    def _on_result(self, reply: bytes) -> None:
        if not self._sent:  # nothing was asked: ignore
            return
        batch, predictor, sent_at = self._sent.popleft()
        self._send()  # the model process has work while this batch is handed back
        now = time.perf_counter()
        seconds = now - max(sent_at, self._done_at)  # its own time, not its wait behind the one before
        self._done_at = now
        size = sum(b - a for _, a, b in batch)
        self.stats.batches += 1
        self.stats.texts += size
        self.stats.inference_seconds += seconds
        try:
            outcome = _outcome(reply, batch, predictor)
        except Exception as exc:
            log.exception("unreadable reply from the model process for a batch of %d texts", size)
            outcome = [RuntimeError(f"unreadable reply from the model process: {exc!r}")] * len(batch)
        self._in_model += 1  # ``_deliver`` counts it back down
        self._deliver(batch, outcome, size, seconds)

    def _lost(self) -> None:
        """The model process died: fail the batches it held (503) and start another."""
        model = self._detach()
        if model is None or self._stopping:
            return
        log.error("the model process exited (code %s); starting another", model.process.exitcode)
        self._down_since = time.monotonic()
        self._close_later(model)
        error = EngineUnavailable("the model process exited while computing this request")
        while self._sent:
            batch, _, _ = self._sent.popleft()
            for job, _, _ in batch:
                job.abandoned = True
                if not job.future.done():
                    job.future.set_exception(error)
        self._drop_abandoned()
        if self._next is not None:  # a reload was waiting for it: the new model process takes over
            self._switch()
            self._send()
        elif self._restart is None:
            assert self._loop is not None
            self._restart = self._loop.create_task(self._start_again())
        self._set_idle_if_idle()

    def _drop_abandoned(self) -> None:
        for job in [job for job in self._jobs if job.abandoned]:
            self._jobs.remove(job)
            self._queued -= job.remaining
            job.taken = len(job.texts)

    async def _start_again(self) -> None:
        """Start a model process again, retrying with backoff for as long as it fails: a failure that
        heals (memory freed, a file back) then needs no one. Meanwhile requests get 503 at once."""
        delay = RESTART_BACKOFF_S[0]
        try:
            while not self._stopping:
                if self._next is not None:  # a reload came meanwhile: its model process takes over
                    self._failure = None
                    self._switch()
                    self._send()
                    return
                try:
                    model = await ModelProcess.start(self._options)
                except Exception as exc:  # EngineUnavailable, or the system refusing a process (OSError)
                    self._failure = f"the model process exited and could not be started again: {exc}"
                    log.error("%s; trying again in %.1f s", self._failure, delay)
                    self._on_restart("failed")
                    self._fail_all(EngineUnavailable(self._failure))
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RESTART_BACKOFF_S[1])
                    continue
                if self._stopping:
                    await model.close()
                    return
                self._failure = None
                self._on_restart("started")
                log.info("the model process is running again")
                self._attach(model)
                self._send()  # a reload that came meanwhile switches in here
                return
        finally:
            self._restart = None

    def _fail_all(self, error: BaseException) -> None:
        jobs = list(self._jobs) + [job for batch, _, _ in self._sent for job, _, _ in batch]
        self._jobs.clear()
        self._queued = 0
        self._sent.clear()
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)
        self._set_idle_if_idle()

    def _set_idle_if_idle(self) -> None:
        if self._is_idle():
            self._idle.set()


def _outcome(
    reply: bytes, batch: list[Slice], predictor: Predictor
) -> list[list[Prediction] | BaseException]:
    """Each slice's predictions (or its error) from the model process's reply."""
    outcome: list[list[Prediction] | BaseException] = []
    if reply[:1] == _OK:
        n, labels = sum(b - a for _, a, b in batch), len(predictor.labels)
        probabilities = np.frombuffer(reply, np.float32, n * labels, offset=1).reshape(n, labels)
        truncated = [flag == 1 for flag in reply[1 + 4 * n * labels :]]
        results = predictor.predictions(probabilities, truncated)
        k = 0
        for _, a, b in batch:
            outcome.append(results[k : k + b - a])
            k += b - a
        return outcome
    for part in json.loads(reply[1:]):
        if "error" in part:
            outcome.append(RuntimeError(part["error"]))
        else:
            probabilities = np.asarray(part["probabilities"], np.float32)
            outcome.append(predictor.predictions(probabilities, part["truncated"]))
    return outcome


# -- the model process --------------------------------------------------------------------------------


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    """The model process: load the checkpoint, then batches of texts in, probabilities out.

    It ignores the signals that a terminal or a supervisor sends the whole process group (Ctrl-C,
    SIGTERM, SIGHUP): the parent drains and reloads, and this process exits when the socket closes.
    """
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    # One batch is tokenised at a time, in one thread: tokenizers' thread pool only made it wait for
    # threads that the busy cores could not run.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # A Python stretch in one thread holds the other back at most this long (the default is 5 ms).
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        configure_threads(options["threads"])
        predictor = Predictor.from_checkpoint(
            options["checkpoint"],
            options["device"],
            options["batch_size"],
            quantize=options["quantize"],
            torchscript=options["torchscript"],
        )
        predictor.predict(["warm up"])
    except Exception as exc:
        conn.send_bytes(_FAILED + f"{type(exc).__name__}: {exc}".encode())
        return
    conn.send_bytes(_OK)
    serve_batches(conn, predictor)


def serve_batches(conn: Connection, predictor: Predictor) -> None:
    """Answer each batch on ``conn`` until it closes (the model process's loop; a thread in tests).

    A second thread receives and tokenises the next batch while this one runs the forward pass of
    the current one (both release the GIL while they work): in the service the next batch is
    usually waiting already (``ProcessBatcher._send``), and the core the event loop leaves over does
    its tokenising (README, "Serving performance").
    """
    ready: queue.Queue[tuple[list[str], list[int], Batch | BaseException | None] | None] = queue.Queue(1)
    threading.Thread(target=_receive, args=(conn, predictor, ready), name="tokenizer", daemon=True).start()
    while (item := ready.get()) is not None:
        try:
            conn.send_bytes(_answer(predictor, *item))
        except OSError:
            return


def _receive(conn: Connection, predictor: Predictor, ready: queue.Queue[Any]) -> None:
    """The tokenizer thread: each batch's texts and slice sizes, and their token ids."""
    while True:
        try:
            texts, sizes = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            ready.put(None)
            return
        encoded: Batch | BaseException | None = None  # None: more than one forward pass's worth
        if len(texts) <= predictor.batch_size:
            try:
                encoded = predictor.checkpoint.tokenizer.encode(texts)
            except Exception as exc:
                encoded = exc
        ready.put((texts, sizes, encoded))


def _answer(
    predictor: Predictor, texts: list[str], sizes: list[int], encoded: Batch | BaseException | None
) -> bytes:
    try:
        if isinstance(encoded, BaseException):
            raise encoded
        if encoded is None:
            probabilities, truncated = predictor.predict_proba(texts)
        else:
            probabilities, truncated = (
                predictor.probabilities(encoded.ids, encoded.lengths),
                encoded.truncated,
            )
        return _OK + np.ascontiguousarray(probabilities, np.float32).tobytes() + bytes(truncated)
    except Exception:
        log.exception("batch of %d texts failed; retrying its requests one by one", len(texts))
        return _FAILED + json.dumps(_alone(predictor, texts, sizes)).encode()


def _alone(predictor: Predictor, texts: list[str], sizes: list[int]) -> list[dict[str, Any]]:
    """Each request's part of a failed batch on its own, so that a bad request fails only itself."""
    parts: list[dict[str, Any]] = []
    k = 0
    for n in sizes:
        try:
            probabilities, truncated = predictor.predict_proba(texts[k : k + n])
            parts.append({"probabilities": probabilities.tolist(), "truncated": truncated})
        except Exception as exc:
            parts.append({"error": f"{type(exc).__name__}: {exc}"})
        k += n
    return parts
