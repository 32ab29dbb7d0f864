"""A real ``python -m service`` on a free 127.0.0.1 port, for the loopback tests; always killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(checkpoint: Path, port: int = 8000, **settings: str) -> dict[str, str]:
    """The environment for ``python -m service``: ours only, none of the caller's SENTIMENT_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env |= {"SENTIMENT_CHECKPOINT": str(checkpoint), "SENTIMENT_PORT": str(port), "SENTIMENT_DEVICE": "cpu"}
    env |= {"SENTIMENT_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # The server runs from a temporary directory: import this checkout's code, not an installed copy.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env |= {f"SENTIMENT_{k.upper()}": v for k, v in settings.items()}
    return env


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


@contextlib.contextmanager
def live_server(checkpoint: Path, workdir: Path, **settings: str) -> Iterator[LiveServer]:
    """Start the service (``settings`` become ``SENTIMENT_*`` variables) and wait until it is ready."""
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env=service_env(checkpoint, port, **settings),
            cwd=workdir,  # away from any .env in the repository
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the service exited with {server.process.returncode}:\n{server.log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the service was not ready within {START_TIMEOUT_S} s:\n{server.log}")
