"""Graceful shutdown over loopback, and start-up that fails fast on a bad checkpoint."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.__main__ import main
from service.settings import get_settings
from tests.service.live_server import live_server, service_env

SPACING_S = 0.01  # a new request every 10 ms ...
AFTER_SIGTERM_S = 0.4  # ... until this long after SIGTERM
MAX_REQUESTS = 300


@dataclass
class Outcome:
    request_id: str
    status: int | None  # None: no response (refused, or reset before the server took the request)
    done_at: float


async def _queue_depth(client: httpx.AsyncClient) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("sentiment_queue_depth_texts "):
            return float(line.split()[1])
    return 0.0


async def _burst_with_sigterm(server_url: str, pid: int) -> tuple[list[Outcome], float]:
    """Send a steady stream of requests; SIGTERM once some wait in the queue; go on a while after."""
    limits = httpx.Limits(max_keepalive_connections=0)  # a fresh connection per request
    async with httpx.AsyncClient(base_url=server_url, limits=limits, timeout=20) as client:

        async def one(i: int) -> Outcome:
            rid = f"burst-{i}"
            try:
                r = await client.post(
                    "/predict", json={"texts": ["i love it"]}, headers={"X-Request-ID": rid}
                )
                return Outcome(rid, r.status_code, time.monotonic())
            except httpx.HTTPError:
                return Outcome(rid, None, time.monotonic())

        async def sigterm_when_requests_wait() -> float:
            async with httpx.AsyncClient(base_url=server_url, timeout=5) as probe:
                deadline = time.monotonic() + 10
                while await _queue_depth(probe) < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            os.kill(pid, signal.SIGTERM)
            return time.monotonic()

        sigterm = asyncio.create_task(sigterm_when_requests_wait())
        tasks: list[asyncio.Task[Outcome]] = []
        while len(tasks) < MAX_REQUESTS and not (
            sigterm.done() and time.monotonic() > sigterm.result() + AFTER_SIGTERM_S
        ):
            tasks.append(asyncio.create_task(one(len(tasks))))
            await asyncio.sleep(SPACING_S)
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 30)), await sigterm


def _served(log: str) -> dict[str, int]:
    """request id -> status, from the server's JSON access log."""
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return {e["request_id"]: e["status"] for e in entries if e["logger"] == "service.access"}


@pytest.mark.slow
def test_sigterm_finishes_every_accepted_request_then_exits_0(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # Batches wait 300 ms to fill, so requests are in flight when SIGTERM lands.
    settings = {"max_wait_ms": "300", "log_format": "json", "shutdown_grace_s": "10"}
    with live_server(tiny_checkpoint, tmp_path, **settings) as server:
        outcomes, sigterm_at = asyncio.run(_burst_with_sigterm(server.url, server.process.pid))
        code = server.wait(timeout=20)
        served = _served(server.log)

    sent = len(outcomes)
    burst = {o.request_id: o for o in outcomes}
    answered = {rid for rid, o in burst.items() if o.status is not None}
    accepted = {rid for rid in served if rid in burst}
    finished_after_sigterm = [o for o in outcomes if o.status == 200 and o.done_at > sigterm_at]
    counts = Counter(o.status for o in outcomes)
    print(
        f"\nshutdown: sent {sent}, accepted {len(accepted)}, answered 200 {counts[200]} "
        f"({len(finished_after_sigterm)} after SIGTERM), not accepted {counts[None]}, exit code {code}"
    )
    assert code == 0, server.log[-3000:]
    assert set(counts) <= {200, None}  # no 5xx, no cancelled request
    assert accepted == answered  # every request the app took got its answer, and only those
    assert all(served[rid] == 200 for rid in accepted)
    assert finished_after_sigterm  # requests in flight at SIGTERM were finished, not dropped
    assert counts[None] > 0  # and new ones were turned away
    assert "Cancel" not in server.log


@pytest.mark.slow
def test_start_up_on_a_corrupt_checkpoint_fails_fast_naming_the_file(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, corrupt)
    with (corrupt / "model.safetensors").open("r+b") as f:
        f.truncate(100)
    run = subprocess.run(
        [sys.executable, "-m", "service"],
        env=service_env(corrupt, port=1),  # never bound: start-up stops before
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert f"cannot start: {corrupt / 'model.safetensors'} is truncated or altered" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_start_up_without_the_checkpoint_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("SENTIMENT_CHECKPOINT", str(tmp_path / "missing"))
    get_settings.cache_clear()
    try:
        code = main([])
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert f"checkpoint directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
