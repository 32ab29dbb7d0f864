"""A real server: an explanation past its deadline stops using CPU within 1 s of its 504.

The size limit would refuse an explanation that cannot finish in time, so the server here lets one
request take 100 times its deadline (``DEADLINE_SHARE``) to get one that runs past it. Run with ``-s``
to see the figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from model.checkpoint import DEFAULT_CHECKPOINT
from tests.service.live_server import LiveServer, _wait_ready, free_port, service_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SERVE = (
    "import sys, service.explain_routes as r, service.__main__ as m; "
    "r.DEADLINE_SHARE = 100; sys.exit(m.main())"
)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def test_an_explanation_past_its_deadline_stops_using_cpu(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(DEFAULT_CHECKPOINT.resolve(), port, request_timeout_s="1", model_process="false")
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever is installed
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE], env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        server = LiveServer(process, f"http://127.0.0.1:{port}", log)
        _wait_ready(server)
        text = " ".join(f"word{k}" for k in range(200))  # past max_length: 128 tokens, 129 rows
        body = {"texts": [text] * 256}  # ~4 M token steps: ~20 s of CPU, against a 1 s deadline
        start = time.monotonic()
        answer = httpx.post(f"{server.url}/explain", json=body, timeout=30)
        answered = time.monotonic()
        assert answer.status_code == 504, answer.text
        samples = [(0.0, cpu_seconds(process.pid))]
        while samples[-1][0] < 3.0:
            time.sleep(0.05)
            samples.append((time.monotonic() - answered, cpu_seconds(process.pid)))
        busy_until = max(
            (t for (t, c), (_, prev) in zip(samples[1:], samples, strict=False) if c > prev), default=0
        )
        after_1s = samples[-1][1] - next(c for t, c in samples if t >= 1.0)
        print(
            f"\n504 after {answered - start:.2f} s; CPU still used until {busy_until:.2f} s after it; "
            f"CPU from 1 s to {samples[-1][0]:.1f} s after: {after_1s:.2f} s"
        )
        assert after_1s < 0.1, samples
    finally:
        process.kill()
        process.wait(10)
