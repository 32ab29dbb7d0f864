"""Runners: a batch of texts to each request's probabilities, in a thread and in a child process."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Sequence
from multiprocessing import Pipe
from pathlib import Path

import numpy as np
import pytest
import torch

from model import Predictor
from service.engine import Answer, EngineUnavailable
from service.runners import ProcessRunner, ThreadRunner, compute, serve
from service.settings import Settings

TEXTS = ["i love it", "the worst day ever", "ok", "the report was published on monday", "great"]


def assert_answers(answer: Answer, predictor: Predictor, requests: Sequence[list[str] | None]) -> None:
    """The answer holds the predictor's own answer for each request (to float rounding), and an error
    for each request given as None."""
    assert [k for k, texts in enumerate(requests) if texts is None] == sorted(answer.errors)
    start = 0
    for texts in requests:
        if texts is None:
            start += 1  # the failing requests below are one text each
            continue
        want, truncated = predictor.predict_proba(texts)
        np.testing.assert_allclose(answer.probabilities[start : start + len(texts)], want, atol=1e-6)
        assert answer.truncated[start : start + len(texts)] == truncated
        start += len(texts)
    assert start == len(answer.truncated)


class FailsOn:
    """The predictor, except that any forward pass over ``bad`` (a word it knows) fails."""

    def __init__(self, inner: Predictor, bad: str) -> None:
        self.inner, self.bad_id = inner, inner.checkpoint.tokenizer.tokenizer.token_to_id(bad)
        assert self.bad_id is not None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def probabilities(self, ids: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        if bool(ids.eq(self.bad_id).any()):
            raise ValueError("cannot predict 'monday'")
        return self.inner.probabilities(ids, lengths)

    def predict_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        batch = self.inner.checkpoint.tokenizer.encode(texts)
        return self.probabilities(batch.ids, batch.lengths), batch.truncated


def test_compute_answers_one_pass_per_batch_and_a_failing_request_fails_alone(predictor: Predictor) -> None:
    assert_answers(compute(predictor, TEXTS, [2, 3]), predictor, [TEXTS[:2], TEXTS[2:]])
    texts = [*TEXTS[:2], TEXTS[3], "great"]  # TEXTS[3] has "monday"
    answer = compute(FailsOn(predictor, "monday"), texts, [2, 1, 1])  # type: ignore[arg-type]
    assert answer.errors == {1: "ValueError: cannot predict 'monday'"}
    assert_answers(answer, predictor, [TEXTS[:2], None, ["great"]])


def test_the_child_loop_answers_each_batch_until_the_pipe_closes(predictor: Predictor) -> None:
    parent, child = Pipe()
    thread = threading.Thread(target=serve, args=(child, predictor), daemon=True)
    thread.start()
    big = TEXTS * 2  # over the predictor's batch size: tokenised by the forward pass, not ahead
    for batch, sizes in [(TEXTS, [5]), (big, [4, 6])]:
        parent.send((batch, sizes))
    first, second = parent.recv(), parent.recv()
    parent.close()
    thread.join(5)
    assert not thread.is_alive()
    assert_answers(first, predictor, [TEXTS])
    assert_answers(second, predictor, [big[:4], big[4:]])


def test_a_thread_runner(settings: Settings, predictor: Predictor) -> None:
    async def main() -> Answer:
        runner = await ThreadRunner.start(settings, settings.checkpoint)
        try:
            assert runner.labels == predictor.labels and runner.version == predictor.checkpoint.version
            return await runner.run(TEXTS, [3, 2])
        finally:
            await runner.close()

    assert_answers(asyncio.run(main()), predictor, [TEXTS[:3], TEXTS[3:]])


def test_a_process_runner_answers_and_reports_its_death(settings: Settings, predictor: Predictor) -> None:
    """One child for the whole lifecycle: each start costs a fresh interpreter and torch (~2 s)."""

    async def main() -> None:
        runner = await ProcessRunner.start(settings, settings.checkpoint)
        lost = asyncio.Event()
        runner.on_lost = lost.set
        assert runner.labels == predictor.labels and runner.version == predictor.checkpoint.version
        first, second = runner.run(TEXTS, [5]), runner.run(TEXTS[::-1], [2, 3])  # two in flight
        assert_answers(await first, predictor, [TEXTS])
        assert_answers(await second, predictor, [TEXTS[::-1][:2], TEXTS[::-1][2:]])
        # A small batch, alone (answered in this process) and beside a large one (in the child).
        assert_answers(await runner.run(TEXTS[:2], [1, 1]), predictor, [TEXTS[:1], TEXTS[1:2]])
        large, small = runner.run(TEXTS, [5]), runner.run(TEXTS[:1], [1])
        assert_answers(await small, predictor, [TEXTS[:1]])
        assert_answers(await large, predictor, [TEXTS])
        assert runner.process.pid is not None
        os.kill(runner.process.pid, signal.SIGKILL)
        await asyncio.wait_for(lost.wait(), 10)
        await runner.close()
        assert not runner.process.is_alive()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_checkpoint_that_cannot_load_fails_start_with_the_reason(
    settings: Settings, tmp_path: Path
) -> None:
    async def main() -> None:
        with pytest.raises(EngineUnavailable, match=r"failed to start: .*missing"):
            await ProcessRunner.start(settings, tmp_path / "missing")

    asyncio.run(asyncio.wait_for(main(), 60))
