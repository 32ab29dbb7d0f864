"""The batching engine with the model in a child process: answers, isolation, crashes, reloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from multiprocessing import Pipe
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch

from model import Predictor, save_checkpoint
from model.predictor import Prediction
from service.batching import EngineUnavailable
from service.model_process import HERE_TEXTS, ModelProcess, ProcessBatcher, _outcome, serve_batches
from tests.conftest import tiny_checkpoint_object

T = TypeVar("T")
TEXTS = ["i love it", "the worst day ever", "ok", "the report was published on monday", "great"]


def run(
    checkpoint: Path, predictor: Predictor, scenario: Callable[[ProcessBatcher], Awaitable[T]], **options: int
) -> T:
    async def main() -> T:
        engine = ProcessBatcher(predictor, checkpoint, threads=1, torchscript=False, **options)  # type: ignore[arg-type]
        await engine.start()
        try:
            return await scenario(engine)
        finally:
            await engine.stop()

    return asyncio.run(asyncio.wait_for(main(), 60))


def assert_same(got: Sequence[Prediction], want: Sequence[Prediction]) -> None:
    """The same predictions, to float rounding (batches of other sizes round differently)."""
    assert [(p.label, p.truncated) for p in got] == [(p.label, p.truncated) for p in want]
    for g, w in zip(got, want, strict=True):
        assert list(g.probabilities) == list(w.probabilities)
        assert g.probabilities == pytest.approx(w.probabilities, abs=1e-6)


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Predictor]:
    """A second tiny checkpoint to reload (other weights, so other answers), and its predictor."""
    other = save_checkpoint(tiny_checkpoint_object(seed=1), tmp_path_factory.mktemp("other") / "other")
    return other, Predictor.from_checkpoint(other, device="cpu")


@contextlib.contextmanager
def frozen(engine: ProcessBatcher) -> Iterator[None]:
    """The engine's model process stopped (SIGSTOP) in the block: it answers nothing until after it."""
    assert engine._model is not None and engine._model.process.pid is not None
    pid = engine._model.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_requests_get_the_predictors_answers_in_order_and_are_batched(
    tiny_checkpoint: Path, predictor: Predictor
) -> None:
    requests = [TEXTS[:1], TEXTS, TEXTS[2:4] * 5, [TEXTS[3]], TEXTS[::-1]]

    async def scenario(engine: ProcessBatcher) -> list[list[Prediction]]:
        results = await asyncio.gather(*(engine.submit(texts) for texts in requests))
        assert engine.stats.batches < sum(map(len, requests))  # requests shared batches
        assert engine.stats.texts == sum(map(len, requests))
        return list(results)

    results = run(tiny_checkpoint, predictor, scenario, max_batch_size=4)
    for texts, got in zip(requests, results, strict=True):
        assert_same(got, predictor.predict(texts))  # type: ignore[arg-type]


class _FailsOn:
    """The predictor, except that any forward pass over ``bad`` (a word it knows) fails."""

    def __init__(self, inner: Predictor, bad: str) -> None:
        self.inner, self.bad = inner, bad
        bad_id = inner.checkpoint.tokenizer.tokenizer.token_to_id(bad)
        assert bad_id is not None
        self.bad_id: int = bad_id

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def probabilities(self, ids: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        if bool(ids.eq(self.bad_id).any()):
            raise ValueError(f"cannot predict {self.bad!r}")
        return self.inner.probabilities(ids, lengths)

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        batch = self.inner.checkpoint.tokenizer.encode(texts)
        return self.probabilities(batch.ids, batch.lengths), batch.truncated


def test_a_failing_request_fails_alone_in_the_model_process(predictor: Predictor) -> None:
    parent, child = Pipe()
    model = _FailsOn(predictor, "monday")
    thread = threading.Thread(target=serve_batches, args=(child, model), daemon=True)
    thread.start()
    parent.send_bytes(json.dumps([["i love it", "on monday", "ok", "great"], [1, 2, 1]]).encode())
    reply = parent.recv_bytes()
    parent.close()
    thread.join(5)
    assert not thread.is_alive()  # it returns once the socket closes

    slices = [(None, 0, 1), (None, 0, 2), (None, 1, 2)]  # three requests' parts: 1, 2 and 1 texts
    first, second, third = _outcome(reply, slices, predictor)  # type: ignore[arg-type]
    assert isinstance(second, RuntimeError) and "cannot predict 'monday'" in str(second)
    assert_same(first, predictor.predict(["i love it"]))  # type: ignore[arg-type]
    assert_same(third, predictor.predict(["great"]))  # type: ignore[arg-type]


def test_a_checkpoint_that_cannot_load_fails_start_with_the_reason(
    tmp_path: Path, predictor: Predictor
) -> None:
    async def main() -> None:
        engine = ProcessBatcher(predictor, tmp_path / "missing", threads=1)
        with pytest.raises(EngineUnavailable, match=r"failed to start: .*missing"):
            await engine.start()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_lone_small_request_runs_in_this_process_and_a_large_one_in_the_model_process(
    tiny_checkpoint: Path, predictor: Predictor
) -> None:
    async def scenario(engine: ProcessBatcher) -> None:
        with frozen(engine):  # only this process can answer
            small = TEXTS[:HERE_TEXTS]
            assert_same(await asyncio.wait_for(engine.submit(small), 10), predictor.predict(small))
            large = asyncio.create_task(engine.submit(TEXTS * 2))
            await asyncio.sleep(0.3)
            assert not large.done()  # waiting for the model process
        assert_same(await asyncio.wait_for(large, 10), predictor.predict(TEXTS * 2))

    run(tiny_checkpoint, predictor, scenario)


@pytest.mark.slow
def test_a_dead_model_process_fails_only_its_batch_and_is_replaced(
    tiny_checkpoint: Path, predictor: Predictor
) -> None:
    async def scenario(engine: ProcessBatcher) -> None:
        assert engine._model is not None
        old = engine._model.process
        assert old.pid is not None
        os.kill(old.pid, signal.SIGSTOP)  # frozen: it cannot answer what it is sent
        in_flight = asyncio.create_task(engine.submit(TEXTS))  # too many to run in this process
        await asyncio.sleep(0.2)
        os.kill(old.pid, signal.SIGKILL)
        with pytest.raises(EngineUnavailable, match="exited while computing"):
            await in_flight
        assert engine.unavailable == "the model process is restarting"  # /readyz says 503
        # Queued while the replacement starts, answered once it is up.
        assert_same(await engine.submit(TEXTS), predictor.predict(TEXTS))
        assert engine._model is not None and engine._model.process is not old

    run(tiny_checkpoint, predictor, scenario)


@pytest.mark.slow
def test_a_model_process_that_fails_to_start_again_is_retried_until_it_starts(
    tiny_checkpoint: Path, predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start, failures = ModelProcess.start, [2]

    async def flaky_start(options: dict) -> ModelProcess:  # type: ignore[type-arg]
        if failures[0]:
            failures[0] -= 1
            raise EngineUnavailable("the model process failed to start: out of memory")
        return await real_start(options)

    async def scenario(engine: ProcessBatcher) -> None:
        monkeypatch.setattr(ModelProcess, "start", staticmethod(flaky_start))
        monkeypatch.setattr("service.model_process.RESTART_BACKOFF_S", (0.05, 0.1))
        assert engine._model is not None and engine._model.process.pid is not None
        os.kill(engine._model.process.pid, signal.SIGKILL)
        for _ in range(100):  # the first two starts fail; meanwhile requests get 503 at once
            await asyncio.sleep(0.05)
            if engine.unavailable and "could not be started again" in engine.unavailable:
                break
        with pytest.raises(EngineUnavailable, match="out of memory"):
            await engine.submit(TEXTS)
        assert engine.unavailable_since is not None
        for _ in range(200):  # then it heals by itself
            await asyncio.sleep(0.05)
            if engine.unavailable is None:
                break
        assert failures == [0] and engine.unavailable_since is None
        assert_same(await engine.submit(TEXTS), predictor.predict(TEXTS))

    run(tiny_checkpoint, predictor, scenario)


@pytest.mark.slow
def test_a_reload_switches_to_a_new_model_process(
    tiny_checkpoint: Path, predictor: Predictor, reloaded: tuple[Path, Predictor]
) -> None:
    other, new = reloaded

    async def scenario(engine: ProcessBatcher) -> None:
        assert engine._model is not None
        old = engine._model.process
        before = await engine.submit(TEXTS)
        await engine.use(new, other)
        after = await engine.submit(TEXTS)
        assert_same(before, predictor.predict(TEXTS))
        assert_same(after, new.predict(TEXTS))
        assert [p.probabilities for p in after] != [p.probabilities for p in before]
        assert engine.predictor is new
        await asyncio.to_thread(old.join, 10)
        assert not old.is_alive()

    run(tiny_checkpoint, predictor, scenario)


def test_an_unreadable_reply_fails_its_batch_and_a_late_one_is_ignored(
    tiny_checkpoint: Path, predictor: Predictor
) -> None:
    async def scenario(engine: ProcessBatcher) -> None:
        with frozen(engine):  # once thawed, its real answer, now nobody's, is dropped
            in_flight = asyncio.create_task(engine.submit(TEXTS))
            await asyncio.sleep(0.1)
            assert engine._model is not None
            engine._model.frames.data_received(struct.pack("!i", 1) + b"\x00")  # no probabilities
            with pytest.raises(RuntimeError, match="unreadable reply"):
                await asyncio.wait_for(in_flight, 5)
        assert_same(await asyncio.wait_for(engine.submit(TEXTS), 10), predictor.predict(TEXTS))

    run(tiny_checkpoint, predictor, scenario)


def test_drain_returns_once_a_cancelled_request_has_left_the_queue(
    tiny_checkpoint: Path, predictor: Predictor
) -> None:
    async def scenario(engine: ProcessBatcher) -> None:
        waiting = asyncio.create_task(engine.submit(TEXTS))  # held for max_wait_ms, batch not full
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.wait_for(engine.drain(), 5)

    run(tiny_checkpoint, predictor, scenario, max_wait_ms=300)


@pytest.mark.slow
def test_a_reload_waits_for_the_batch_in_flight_and_a_crash_after_it_keeps_the_new_checkpoint(
    tiny_checkpoint: Path, predictor: Predictor, reloaded: tuple[Path, Predictor]
) -> None:
    other, new = reloaded

    async def scenario(engine: ProcessBatcher) -> None:
        with frozen(engine):
            first = asyncio.create_task(engine.submit(TEXTS))  # in the old model process
            await asyncio.sleep(0.1)
            await engine.use(new, other)  # waits for that batch before switching
            second = asyncio.create_task(engine.submit(TEXTS))
            await asyncio.sleep(0.1)
            assert not first.done() and not second.done()
        assert_same(await asyncio.wait_for(first, 10), predictor.predict(TEXTS))
        assert_same(await asyncio.wait_for(second, 10), new.predict(TEXTS))

        assert engine._model is not None and engine._model.process.pid is not None
        os.kill(engine._model.process.pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        # Started again on the checkpoint it had reloaded, not on the one it started with.
        assert_same(await asyncio.wait_for(engine.submit(TEXTS), 30), new.predict(TEXTS))

    run(tiny_checkpoint, predictor, scenario)
