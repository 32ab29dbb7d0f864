"""The batching engine's correctness: order, fairness, isolation, bounds, cancellation (not speed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest

from model.predictor import Prediction, Predictor
from service.batching import Batcher, DirectRunner, QueueFull

T = TypeVar("T")


class Echo:
    """A stand-in model: each text's label is the text; records batches; can hold or fail them."""

    def __init__(self, hold: bool = False, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()  # a batch is in predict()
        self.release = threading.Event()  # held batches go on once set
        if not hold:
            self.release.set()
        self.fail_on = fail_on

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.batches.append(list(texts))
        self.entered.set()
        self.release.wait(5)
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot predict {self.fail_on!r}")
        return [Prediction(label=t, score=1.0, probabilities={t: 1.0}) for t in texts]

    @property
    def texts_seen(self) -> int:
        return sum(len(b) for b in self.batches)


def run(scenario: Callable[[Batcher], Awaitable[T]], model: Any, **options: Any) -> T:
    """Run ``scenario`` against a started engine over ``model``; stop it afterwards."""

    async def main() -> T:
        engine = Batcher(model, **options)
        await engine.start()
        try:
            return await scenario(engine)
        finally:
            await engine.stop()

    return asyncio.run(asyncio.wait_for(main(), 10))


async def in_model(model: Echo) -> None:
    """Wait until a batch is inside ``model.predict`` (the engine's thread is then busy)."""
    assert await asyncio.to_thread(model.entered.wait, 5)


def labels(predictions: Sequence[Prediction]) -> list[str]:
    return [p.label for p in predictions]


def test_results_come_back_in_input_order_across_split_batches() -> None:
    model = Echo()
    requests = [[f"{'x' * (7 - i % 7)}{r}-{i}" for i in range(n)] for r, n in enumerate([1, 9, 3, 17, 2])]

    async def scenario(engine: Batcher) -> list[list[Prediction]]:
        return list(await asyncio.gather(*(engine.submit(texts) for texts in requests)))

    results = run(scenario, model, max_batch_size=4)
    assert [labels(r) for r in results] == requests
    assert max(len(b) for b in model.batches) <= 4  # the large requests were split


def test_real_model_results_match_direct_prediction(predictor: Predictor) -> None:
    requests = [["i love this , it is wonderful"], ["the meeting is at noon today", "awful food", "great"]]

    async def scenario(engine: Batcher) -> list[list[Prediction]]:
        return list(await asyncio.gather(*(engine.submit(texts) for texts in requests)))

    for texts, got in zip(requests, run(scenario, predictor, max_batch_size=2), strict=True):
        want = predictor.predict(texts)
        assert labels(got) == labels(want)
        for g, w in zip(got, want, strict=True):
            assert g.probabilities == pytest.approx(w.probabilities, abs=1e-5)


def test_small_request_after_a_large_one_finishes_first() -> None:
    model = Echo(hold=True)
    finished: list[str] = []

    async def scenario(engine: Batcher) -> None:
        large = asyncio.create_task(engine.submit([f"large {i}" for i in range(40)]))
        large.add_done_callback(lambda _: finished.append("large"))
        await in_model(model)  # the large request's first slice is in the model
        small = asyncio.create_task(engine.submit(["small"]))
        small.add_done_callback(lambda _: finished.append("small"))
        await asyncio.sleep(0.01)
        model.release.set()
        await asyncio.gather(large, small)

    run(scenario, model, max_batch_size=4)
    assert finished == ["small", "large"]
    assert "small" in model.batches[1]  # interleaved into the very next batch, not after the 40


def test_an_error_fails_only_its_own_request() -> None:
    model = Echo(hold=True, fail_on="boom")

    async def scenario(engine: Batcher) -> list[list[Prediction] | BaseException]:
        first = asyncio.create_task(engine.submit(["first"]))
        await in_model(model)
        rest = [engine.submit(["ok before"]), engine.submit(["boom", "sibling"]), engine.submit(["ok after"])]
        tasks = [asyncio.create_task(r) for r in rest]
        await asyncio.sleep(0.01)  # all three wait together and form one batch
        model.release.set()
        return list(await asyncio.gather(first, *tasks, return_exceptions=True))

    first, before, bad, after = run(scenario, model, max_batch_size=8)
    assert isinstance(bad, ValueError) and "boom" in str(bad)
    assert labels(first) == ["first"]  # type: ignore[arg-type]
    assert labels(before) == ["ok before"]  # type: ignore[arg-type]
    assert labels(after) == ["ok after"]  # type: ignore[arg-type]
    assert ["ok before", "boom", "sibling", "ok after"] in model.batches  # failed together, then alone


def test_queue_full_past_the_bound_and_room_again_after() -> None:
    model = Echo(hold=True)

    async def scenario(engine: Batcher) -> list[Prediction]:
        running = asyncio.create_task(engine.submit(["in the model"]))
        await in_model(model)
        waiting = asyncio.create_task(engine.submit([f"t{i}" for i in range(5)]))
        await asyncio.sleep(0)  # let it queue
        assert engine.queued == 5 and engine.saturated
        with pytest.raises(QueueFull, match="limit 5"):
            await engine.submit(["one too many"])
        model.release.set()
        await asyncio.gather(running, waiting)
        assert engine.queued == 0 and not engine.saturated
        return await engine.submit(["fits again"])

    assert labels(run(scenario, model, max_batch_size=2, max_queue_texts=5)) == ["fits again"]


def test_a_cancelled_request_drops_its_remaining_texts() -> None:
    model = Echo(hold=True)

    async def scenario(engine: Batcher) -> None:
        large = asyncio.create_task(engine.submit([f"t{i}" for i in range(20)]))
        await in_model(model)  # 4 of its 20 texts are in the model
        large.cancel()
        await asyncio.sleep(0)
        model.release.set()
        await engine.drain()
        assert engine.queued == 0
        assert labels(await engine.submit(["after"])) == ["after"]

    run(scenario, model, max_batch_size=4)
    assert model.texts_seen == 4 + 1  # the first slice, then only the next request


def test_a_timed_out_request_drops_its_remaining_texts() -> None:
    model = Echo(hold=True)

    async def scenario(engine: Batcher) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.submit([f"t{i}" for i in range(12)]), 0.05)
        model.release.set()
        await engine.drain()

    run(scenario, model, max_batch_size=4)
    assert model.texts_seen == 4


def test_a_lone_request_runs_at_once() -> None:
    model = Echo()

    async def scenario(engine: Batcher) -> float:
        await engine.submit(["warm"])
        fastest = float("inf")
        for i in range(5):  # the fastest of five, so that one scheduler hiccup cannot fail it
            start = time.perf_counter()
            await engine.submit([f"alone {i}"])
            fastest = min(fastest, time.perf_counter() - start)
        return fastest

    seconds = run(scenario, model, max_batch_size=64)
    assert seconds < 0.02  # no wait for a batch to fill, nor for a timer tick
    assert model.batches == [["warm"]] + [[f"alone {i}"] for i in range(5)]


def test_max_wait_lets_a_batch_fill() -> None:
    model = Echo()

    async def scenario(engine: Batcher) -> None:
        await asyncio.gather(*(engine.submit([f"t{i}"]) for i in range(6)))

    run(scenario, model, max_batch_size=64, max_wait_ms=200)
    assert model.batches == [[f"t{i}" for i in range(6)]]


def test_drain_waits_and_stop_fails_what_is_left() -> None:
    model = Echo(hold=True)

    async def scenario(engine: Batcher) -> None:
        task = asyncio.create_task(engine.submit(["a", "b"]))
        await in_model(model)
        drained = asyncio.create_task(engine.drain())
        await asyncio.sleep(0.01)
        assert not drained.done()
        model.release.set()
        await drained
        assert labels(task.result()) == ["a", "b"]
        assert engine.stats.texts == 2 and engine.stats.mean_batch_size == 2

    run(scenario, model, max_batch_size=4)

    async def stopped() -> None:
        engine = Batcher(Echo(hold=True), max_batch_size=1)  # type: ignore[arg-type]
        await engine.start()
        first = asyncio.create_task(engine.submit(["held"]))
        await in_model(engine.predictor)  # type: ignore[arg-type]
        queued = asyncio.create_task(engine.submit(["queued"]))
        await asyncio.sleep(0)
        stopping = asyncio.create_task(engine.stop())
        await asyncio.sleep(0.01)
        engine.predictor.release.set()  # type: ignore[attr-defined]
        await stopping
        assert labels(await first) == ["held"]  # the batch in the model still finishes
        with pytest.raises(RuntimeError, match="stopped"):
            await queued

    asyncio.run(asyncio.wait_for(stopped(), 10))


def test_batching_off_runs_one_forward_per_request() -> None:
    model = Echo()

    async def main() -> list[list[Prediction]]:
        engine = DirectRunner(model)  # type: ignore[arg-type]
        await engine.start()
        try:
            return list(await asyncio.gather(*(engine.submit([f"r{i}", f"s{i}"]) for i in range(3))))
        finally:
            await engine.stop()

    results = asyncio.run(main())
    assert [labels(r) for r in results] == [[f"r{i}", f"s{i}"] for i in range(3)]
    assert sorted(model.batches) == [[f"r{i}", f"s{i}"] for i in range(3)]
