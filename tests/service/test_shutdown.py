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

from tests.service.live_server import live_server, service_env

BURST = 60
SPACING_S = 0.01  # one request every 10 ms: the burst spans 0.6 s
SIGTERM_AFTER_S = 0.15


@dataclass
class Outcome:
    request_id: str
    status: int | None  # None: no response (refused, or reset before the server took the request)
    done_at: float


async def _burst_with_sigterm(server_url: str, pid: int) -> tuple[list[Outcome], float]:
    limits = httpx.Limits(max_keepalive_connections=0)  # a fresh connection per request
    async with httpx.AsyncClient(base_url=server_url, limits=limits, timeout=20) as client:

        async def one(i: int) -> Outcome:
            await asyncio.sleep(i * SPACING_S)
            rid = f"burst-{i}"
            try:
                r = await client.post(
                    "/predict", json={"texts": ["i love it"]}, headers={"X-Request-ID": rid}
                )
                return Outcome(rid, r.status_code, time.monotonic())
            except httpx.HTTPError:
                return Outcome(rid, None, time.monotonic())

        tasks = [asyncio.create_task(one(i)) for i in range(BURST)]
        await asyncio.sleep(SIGTERM_AFTER_S)
        sigterm_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 30)), sigterm_at


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

    burst = {o.request_id: o for o in outcomes}
    answered = {rid for rid, o in burst.items() if o.status is not None}
    accepted = {rid for rid in served if rid in burst}
    finished_after_sigterm = [o for o in outcomes if o.status == 200 and o.done_at > sigterm_at]
    counts = Counter(o.status for o in outcomes)
    print(
        f"\nshutdown: sent {BURST}, accepted {len(accepted)}, answered 200 {counts[200]} "
        f"({len(finished_after_sigterm)} after SIGTERM), not accepted {counts[None]}, exit code {code}"
    )
    assert code == 0, server.log[-3000:]
    assert set(counts) <= {200, None}  # no 5xx, no cancelled request
    assert accepted == answered  # every request the app took got its answer, and only those
    assert all(served[rid] == 200 for rid in accepted)
    assert finished_after_sigterm  # requests in flight at SIGTERM were finished, not dropped
    assert counts[None] > 0  # and new ones were turned away
    assert "Cancel" not in server.log


def _start_fails(checkpoint: Path, cwd: Path) -> subprocess.Popen[str]:
    env = service_env(checkpoint, port=1)  # the port is never bound: start-up stops before
    return subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=env,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_start_up_fails_fast_naming_the_file_and_problem(tiny_checkpoint: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, corrupt)
    with (corrupt / "model.safetensors").open("r+b") as f:
        f.truncate(100)
    missing = tmp_path / "missing"
    runs = [_start_fails(corrupt, tmp_path), _start_fails(missing, tmp_path)]  # side by side: half the time
    try:
        (bad_out, _), (missing_out, _) = (p.communicate(timeout=60) for p in runs)
    finally:
        for p in runs:
            p.kill()
    assert runs[0].returncode == 2 and runs[1].returncode == 2
    assert f"{corrupt / 'model.safetensors'} is truncated or altered" in bad_out
    assert f"checkpoint directory {missing} does not exist" in missing_out
    assert "Traceback" not in bad_out + missing_out
