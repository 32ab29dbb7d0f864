"""Slow and oversized requests against a local server: are they cut off, and do others keep their speed?

    .venv/bin/python scripts/slowloris.py            # starts python -m service on a free 127.0.0.1 port

1. 20 slowloris connections, each sending its request head one byte a second: when each is closed
   (the head deadline is SENTIMENT_HEADER_TIMEOUT_S), and the latency of ordinary requests meanwhile
   against the same requests before the attack.
2. 8 connections each sending 16 MB of a header that never ends: the server's resident memory before
   and after (the head is bounded by SENTIMENT_MAX_HEADER_BYTES).
Loopback only, bounded in time (about 30 s).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latencies(url: str, n: int = 50) -> list[float]:
    out = []
    with httpx.Client() as client:
        for _ in range(n):
            start = time.perf_counter()
            client.post(f"{url}/predict", json={"texts": ["a fine day"]}).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
    return out


def slowloris(port: int, closed_after: list[float]) -> None:
    start = time.monotonic()
    conn = socket.create_connection(("127.0.0.1", port))
    try:
        conn.settimeout(1.0)  # the pace: a byte a second, unless the server has answered and closed
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            conn.sendall(bytes([byte]))
            try:
                conn.recv(1024)  # an answer (408) or the end of the connection
                break
            except TimeoutError:
                continue
    except OSError:
        pass
    finally:
        closed_after.append(time.monotonic() - start)
        conn.close()


def endless_header(port: int, megabytes: int = 16) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    try:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        for _ in range(megabytes * 16):
            conn.sendall(chunk)
    except OSError:
        pass  # cut off, as it should be
    finally:
        conn.close()


def main() -> int:
    port = free_port()
    env = {**os.environ, "SENTIMENT_PORT": str(port), "SENTIMENT_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        before = latencies(url)
        closed: list[float] = []
        attackers = [threading.Thread(target=slowloris, args=(port, closed)) for _ in range(20)]
        for t in attackers:
            t.start()
        time.sleep(1)
        during = latencies(url)
        for t in attackers:
            t.join(60)
        print(f"slowloris: 20 connections closed after {min(closed):.1f}-{max(closed):.1f} s")
        print(
            f"other clients, p50 / max ms: before {statistics.median(before):.1f} / {max(before):.1f}, "
            f"during {statistics.median(during):.1f} / {max(during):.1f}"
        )
        rss_before = rss_mib(server.pid)
        big = [threading.Thread(target=endless_header, args=(port,)) for _ in range(8)]
        for t in big:
            t.start()
        for t in big:
            t.join(60)
        time.sleep(0.5)
        rss_after = rss_mib(server.pid)
        print(
            f"8 x 16 MB headers: server RSS {rss_before:.0f} -> {rss_after:.0f} MiB "
            f"({rss_after - rss_before:+.0f})"
        )
        print(f"server still answers: {httpx.get(f'{url}/healthz').status_code}")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
