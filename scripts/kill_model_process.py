"""Kill the model process again and again, some kills while its replacement starts: does it heal?

    .venv/bin/python scripts/kill_model_process.py     # starts python -m service on 127.0.0.1:18788

Prints how long after the last kill /readyz answered 200 again, and the status of every /predict sent
between kills (a request either waits for the new model process or gets a clean 503). Loopback only,
bounded (about 20 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

PORT = 18788
URL = f"http://127.0.0.1:{PORT}"
KILLS = 6


def ready() -> bool:
    try:
        return httpx.get(f"{URL}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def model_processes(server: int) -> list[int]:
    """The server's children but multiprocessing's resource tracker."""
    out = subprocess.run(["pgrep", "-P", str(server)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in out if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()]


def main() -> int:
    command = [sys.executable, "-m", "service", "--port", str(PORT), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1])
    statuses: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + 120
        while not ready():
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.2)
        last = time.monotonic()
        for k in range(KILLS):
            for pid in model_processes(server.pid):
                os.kill(pid, signal.SIGKILL)
            last = time.monotonic()
            time.sleep(0.3 if k % 2 else 1.5)  # every other kill lands while the replacement starts
            if k == KILLS - 1:
                break
            for _ in range(5):
                try:
                    statuses[
                        str(httpx.post(f"{URL}/predict", json={"texts": ["ok"]}, timeout=10).status_code)
                    ] += 1
                except httpx.TransportError as error:
                    statuses[type(error).__name__] += 1
        while not ready():
            time.sleep(0.1)
        print(f"{KILLS} kills; /readyz 200 {time.monotonic() - last:.1f} s after the last one")
        print(f"/predict between kills: {dict(statuses)}")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
