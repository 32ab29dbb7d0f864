"""The batching engine: the scheduler as plain data, the engine over a stand-in runner (no threads,
no processes): order, fairness, isolation, bounds, cancellation, losing a runner, swapping one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from model.predictor import Prediction
from service import engine as engine_module
from service.engine import Answer, Engine, EngineUnavailable, Job, QueueFull, Result, Scheduler

T = TypeVar("T")
LABELS = [f"t{i}" for i in range(100)]  # text "t7" is predicted as label "t7": answers are traceable


def texts(*numbers: int) -> list[str]:
    return [f"t{n}" for n in numbers]


def labels(result: Result | Sequence[Prediction]) -> list[str]:
    predictions = result.predictions if isinstance(result, Result) else result
    return [p.label for p in predictions]


class Runner:
    """A stand-in runner: records batches; answers at once, or when told (``hold``)."""

    def __init__(self, version: str = "v1", hold: bool = False, fail_on: str | None = None) -> None:
        self.labels, self.version = LABELS, version
        self.on_lost: Callable[[], None] = lambda: None
        self.hold, self.fail_on = hold, fail_on
        self.batches: list[list[str]] = []
        self.pending: list[tuple[asyncio.Future[Answer], list[str], list[int]]] = []
        self.closed = False

    def run(self, batch: list[str], sizes: list[int]) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.batches.append(batch)
        self.pending.append((future, batch, sizes))
        if not self.hold:
            self.answer()
        return future

    def answer(self, n: int | None = None) -> None:
        """Answer the ``n`` oldest pending batches (default: all)."""
        for future, batch, sizes in self.pending[:n]:
            future.set_result(self.answer_to(batch, sizes))
        del self.pending[:n]

    def answer_to(self, batch: list[str], sizes: list[int]) -> Answer:
        """Text "tN" gets label "tN" with certainty; a request with ``fail_on`` fails."""
        answer = Answer(np.zeros((len(batch), len(LABELS)), np.float32), [False] * len(batch), {})
        answer.probabilities[range(len(batch)), [int(t[1:]) for t in batch]] = 1
        start = 0
        for k, n in enumerate(sizes):
            if self.fail_on in batch[start : start + n]:
                answer.errors[k] = f"ValueError: cannot predict {self.fail_on!r}"
            start += n
        return answer

    async def close(self) -> None:
        self.closed = True

    @property
    def texts_seen(self) -> int:
        return sum(map(len, self.batches))


def run(
    scenario: Callable[[Engine], Awaitable[T]],
    *runners: Runner,
    max_batch_size: int = 4,
    max_queue_texts: int = 4096,
    max_wait_ms: float = 0.0,
    whole: bool = False,
    depth: int = 2,
) -> T:
    """Run ``scenario`` against a started engine whose runners come from ``runners`` in turn."""
    supply = list(runners)

    async def start(path: Path) -> Any:
        runner = supply.pop(0)
        if isinstance(runner, BaseException):
            raise runner
        return runner

    async def main() -> T:
        scheduler = Scheduler(max_batch_size, max_queue_texts, max_wait_ms / 1000, whole)
        engine = Engine(start, Path("first"), scheduler, depth)
        await engine.start()
        try:
            return await scenario(engine)
        finally:
            await engine.stop()

    return asyncio.run(asyncio.wait_for(main(), 10))


async def turn() -> None:
    """Let every ready callback and task run."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- the scheduler, as plain data -----------------------------------------------------------------


def test_a_batch_takes_an_equal_share_of_each_request_shortest_texts_first() -> None:
    scheduler = Scheduler(max_batch_size=4, max_queue_texts=100, max_wait_s=0, whole=False)
    large, small = Job(["xxxx", "x", "xxx", "xx", "xxxxx"]), Job(["a", "b"])
    scheduler.add(large, now=0)
    scheduler.add(small, now=0)
    first = scheduler.take()
    assert [(job, a, b) for job, a, b in first] == [(large, 0, 2), (small, 0, 2)]
    assert [large.texts[i] for i in large.order[:2]] == ["x", "xx"]  # shortest first
    assert scheduler.queued == 3 and scheduler.begun()
    assert scheduler.take() == [(large, 2, 5)]  # alone now: all the room is its
    assert scheduler.queued == 0 and not scheduler.begun()


def test_whole_requests_when_batching_is_off() -> None:
    scheduler = Scheduler(max_batch_size=2, max_queue_texts=100, max_wait_s=1, whole=True)
    first, second = Job(texts(1, 2, 3)), Job(texts(4))
    scheduler.add(first, now=0)
    scheduler.add(second, now=0)
    assert scheduler.wait(now=0) == 0  # no waiting for company
    assert scheduler.take() == [(first, 0, 3)]
    assert scheduler.take() == [(second, 0, 1)]


def test_max_wait_the_queue_bound_and_dropping_a_request() -> None:
    scheduler = Scheduler(max_batch_size=4, max_queue_texts=5, max_wait_s=0.2, whole=False)
    job = Job(texts(1, 2))
    scheduler.add(job, now=10.0)
    assert scheduler.wait(now=10.05) == pytest.approx(0.15)  # not full: give it time to fill
    with pytest.raises(QueueFull, match="2 texts already queued \\(limit 5\\)"):
        scheduler.add(Job(texts(1, 2, 3, 4)), now=10.1)
    scheduler.add(Job(texts(3, 4)), now=10.1)
    assert scheduler.wait(now=10.1) == 0  # full: go
    scheduler.drop(job)
    assert scheduler.queued == 2 and job not in scheduler.jobs


def test_only_begun_requests_before_a_swap() -> None:
    scheduler = Scheduler(max_batch_size=2, max_queue_texts=100, max_wait_s=0, whole=False)
    begun = Job(texts(1, 2, 3))
    scheduler.add(begun, now=0)
    scheduler.take()  # 1 and 2
    fresh = Job(texts(4))
    scheduler.add(fresh, now=0)
    assert scheduler.take(begun_only=True) == [(begun, 2, 3)]
    assert scheduler.take(begun_only=True) == []
    assert scheduler.take() == [(fresh, 0, 1)]


def test_complete_puts_answers_in_input_order_and_fails_only_the_failed_request() -> None:
    scheduler = Scheduler(max_batch_size=8, max_queue_texts=100, max_wait_s=0, whole=False)
    ok, bad = Job(["t22", "t1", "t33"]), Job(texts(5, 6))
    scheduler.add(ok, now=0)
    scheduler.add(bad, now=0)
    batch = scheduler.take()
    answer = Runner().answer_to([*(ok.texts[i] for i in ok.order), *bad.texts], [3, 2])
    answer.errors[1] = "ValueError: boom"
    (first, none), (second, error) = scheduler.complete(batch, answer, LABELS)
    assert (first, none, second) == (ok, None, bad)
    assert isinstance(error, RuntimeError) and str(error) == "ValueError: boom"
    assert labels(ok.results) == ["t22", "t1", "t33"]  # type: ignore[arg-type]


# -- the engine over a stand-in runner ------------------------------------------------------------


def test_results_come_back_in_input_order_across_split_batches() -> None:
    runner = Runner()
    requests = [texts(*range(r, r + n)) for r, n in enumerate([1, 9, 3, 17, 2])]

    async def scenario(engine: Engine) -> list[Result]:
        return list(await asyncio.gather(*(engine.submit(t) for t in requests)))

    results = run(scenario, runner)
    assert [labels(r) for r in results] == requests
    assert max(map(len, runner.batches)) <= 4  # the large requests were split
    assert {r.version for r in results} == {"v1"}


def test_a_small_request_after_a_large_one_finishes_first() -> None:
    runner = Runner(hold=True)
    finished: list[str] = []

    async def scenario(engine: Engine) -> None:
        large = asyncio.create_task(engine.submit(texts(*range(40))))
        large.add_done_callback(lambda _: finished.append("large"))
        await turn()  # its first slice is in the runner
        small = asyncio.create_task(engine.submit(["t99"]))
        small.add_done_callback(lambda _: finished.append("small"))
        while not (large.done() and small.done()):
            runner.answer(1)
            await turn()

    run(scenario, runner)
    assert finished == ["small", "large"]
    assert "t99" in runner.batches[1] or "t99" in runner.batches[2]  # interleaved, not after the 40


def test_an_error_fails_only_its_own_request() -> None:
    runner = Runner(hold=True, fail_on="t66")

    async def scenario(engine: Engine) -> list[Result | BaseException]:
        tasks = [asyncio.create_task(engine.submit(t)) for t in (texts(1), texts(66, 2), texts(3))]
        await turn()
        runner.answer()
        await turn()
        runner.answer()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    first, bad, last = run(scenario, runner, max_batch_size=8)
    assert isinstance(bad, RuntimeError) and "t66" in str(bad)
    assert labels(first) == ["t1"] and labels(last) == ["t3"]  # type: ignore[arg-type]


def test_queue_full_past_the_bound_and_room_again_after() -> None:
    runner = Runner(hold=True)

    async def scenario(engine: Engine) -> Result:
        running = asyncio.create_task(engine.submit(texts(0, 1)))  # in the runner, then 2 in flight
        waiting = asyncio.create_task(engine.submit(texts(*range(2, 7))))
        await turn()
        assert engine.scheduler.queued == 5 - 2  # 2 of them went ahead (depth 2)
        more = asyncio.create_task(engine.submit(texts(7, 8)))
        await turn()
        assert engine.scheduler.queued == 5
        with pytest.raises(QueueFull, match="limit 5"):
            await engine.submit(["t9"])
        while not (running.done() and waiting.done() and more.done()):
            runner.answer()
            await turn()
        assert engine.scheduler.queued == 0
        runner.hold = False
        return await engine.submit(["t10"])

    assert labels(run(scenario, runner, max_batch_size=2, max_queue_texts=5)) == ["t10"]


def test_a_cancelled_or_timed_out_request_drops_its_remaining_texts() -> None:
    runner = Runner(hold=True)

    async def scenario(engine: Engine) -> None:
        large = asyncio.create_task(engine.submit(texts(*range(20))))
        await turn()  # 4 of its 20 texts in the runner; 4 more sent ahead
        large.cancel()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.submit(texts(*range(20, 32))), 0.01)
        assert engine.scheduler.queued == 0
        runner.answer()
        await engine.drain()
        runner.hold = False
        assert labels(await engine.submit(["t99"])) == ["t99"]

    run(scenario, runner)
    assert runner.texts_seen == 8 + 1  # what was in the runner, then only the next request


def test_a_lone_request_is_sent_at_once_and_max_wait_lets_a_batch_fill() -> None:
    lone = Runner(hold=True)

    async def alone(engine: Engine) -> None:
        task = asyncio.create_task(engine.submit(["t1"]))
        await asyncio.sleep(0)
        assert lone.batches == [["t1"]]  # no wait for company, nor for a timer
        lone.answer()
        await task

    run(alone, lone, max_batch_size=64)

    filled = Runner()

    async def together(engine: Engine) -> None:
        await asyncio.gather(*(engine.submit([f"t{i}"]) for i in range(6)))

    run(together, filled, max_batch_size=64, max_wait_ms=50)
    assert filled.batches == [texts(*range(6))]


def test_drain_waits_and_stop_fails_what_is_left() -> None:
    runner = Runner(hold=True)

    async def scenario(engine: Engine) -> None:
        task = asyncio.create_task(engine.submit(texts(1, 2)))
        await turn()
        drained = asyncio.create_task(engine.drain())
        await turn()
        assert not drained.done()
        runner.answer()
        await drained
        assert labels(task.result()) == ["t1", "t2"]
        assert engine.stats["texts"] == 2 and engine.stats["batches"] == 1

    run(scenario, runner)

    async def stopped(engine: Engine) -> None:
        first = asyncio.create_task(engine.submit(["t1"]))
        queued = asyncio.create_task(engine.submit(["t2"]))
        await turn()  # t1 in the runner; t2 waits (half a batch is 1 with max_batch_size 1)
        stopping = asyncio.create_task(engine.stop())
        await turn()
        held.answer()
        await stopping
        assert labels(await first) == ["t1"]  # the batch in the runner still finishes
        with pytest.raises(RuntimeError, match="stopped"):
            await queued

    held = Runner(hold=True)
    run(stopped, held, max_batch_size=1, depth=1)
    assert held.closed


def test_batching_off_runs_each_request_whole_and_side_by_side() -> None:
    runner = Runner(hold=True)

    async def scenario(engine: Engine) -> list[Result]:
        tasks = [asyncio.create_task(engine.submit(texts(i, 10 + i, 20 + i))) for i in range(3)]
        await turn()
        assert len(runner.pending) == 3  # all three at once, one forward each
        runner.answer()
        return list(await asyncio.gather(*tasks))

    results = run(scenario, runner, max_batch_size=2, whole=True, depth=4)
    assert [labels(r) for r in results] == [texts(i, 10 + i, 20 + i) for i in range(3)]


def test_a_lost_runner_fails_only_its_batches_and_a_new_one_is_started() -> None:
    first, second = Runner(hold=True), Runner(version="v2")

    async def scenario(engine: Engine) -> None:
        in_flight = asyncio.create_task(engine.submit(texts(1, 2)))
        await turn()
        first.on_lost()
        assert engine.unavailable == "the model process is restarting" and engine.unavailable_since
        with pytest.raises(EngineUnavailable, match="exited while computing"):
            await in_flight
        result = await engine.submit(texts(3))  # queued while the new one starts, then answered
        assert labels(result) == ["t3"] and result.version == "v2"
        assert engine.unavailable is None and engine.unavailable_since is None
        assert first.closed

    run(scenario, first, second)


def test_a_runner_that_fails_to_start_again_is_retried_until_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "RESTART_BACKOFF_S", (0.01, 0.02))
    first, healed = Runner(), Runner(version="v2")
    outcomes: list[str] = []

    async def scenario(engine: Engine) -> None:
        engine.on_restart = outcomes.append
        first.on_lost()
        while engine.unavailable is None or "could not be started again" not in engine.unavailable:
            await asyncio.sleep(0.005)
        with pytest.raises(EngineUnavailable, match="out of memory"):
            await engine.submit(texts(1))  # 503 at once meanwhile
        while engine.unavailable is not None:
            await asyncio.sleep(0.005)
        assert labels(await engine.submit(texts(2))) == ["t2"]

    oom = EngineUnavailable("the model process failed to start: out of memory")
    run(scenario, first, oom, oom, healed)  # type: ignore[arg-type]
    assert outcomes == ["failed", "failed", "started"]


def test_a_swap_waits_for_begun_requests_and_each_reports_the_model_that_computed_it() -> None:
    old, new, again = Runner(hold=True), Runner(version="v2", hold=True), Runner(version="v3")

    async def scenario(engine: Engine) -> None:
        begun = asyncio.create_task(engine.submit(texts(*range(10))))  # 4 + 4 in the old runner
        await turn()
        await engine.swap(new, Path("second"))
        fresh = asyncio.create_task(engine.submit(texts(50)))
        await turn()
        assert new.batches == []  # the old runner still has a begun request to finish
        while not begun.done():
            old.answer()
            await turn()
        assert begun.result().version == "v1" and labels(begun.result()) == texts(*range(10))
        await turn()
        new.answer()
        assert (await fresh).version == "v2" and old.closed
        new.on_lost()  # restarted on the checkpoint it swapped to
        assert (await engine.submit(texts(1))).version == "v3" and engine.checkpoint == Path("second")

    run(scenario, old, again)  # the swap brings ``new`` itself


def test_an_unreadable_answer_fails_its_batch_only() -> None:
    runner = Runner(hold=True)

    async def scenario(engine: Engine) -> None:
        task = asyncio.create_task(engine.submit(texts(1)))
        await turn()
        future, _, _ = runner.pending.pop()
        future.set_exception(ValueError("2 truncation flags for 1 texts"))
        with pytest.raises(RuntimeError, match="unreadable answer"):
            await task
        runner.hold = False
        assert labels(await engine.submit(texts(2))) == ["t2"]

    run(scenario, runner)


def test_a_misshapen_answer_fails_every_request_of_its_batch() -> None:
    """One request failed in the answer, the next one's rows missing: both fail, neither waits."""
    runner = Runner(hold=True)

    async def scenario(engine: Engine) -> list[Any]:
        tasks = [asyncio.create_task(engine.submit(texts(n))) for n in (1, 2)]
        await asyncio.sleep(0.1)  # both in one batch, after max_wait_ms
        future, batch, sizes = runner.pending.pop()
        answer = runner.answer_to(batch, sizes)
        answer.errors[0] = "ValueError: no"
        future.set_result(answer._replace(probabilities=answer.probabilities[:1]))
        return list(await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1))

    first, second = run(scenario, runner, max_wait_ms=50)
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)
    assert "unreadable answer" in str(second)
