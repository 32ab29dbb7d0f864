"""Connection hygiene against a real server: a head and a body that do not arrive in time, and a head
that never ends, are cut off, and other clients are served meanwhile (slow: a server on loopback)."""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.live_server import live_server

pytestmark = pytest.mark.slow


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    conn = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return conn


def _answer(conn: socket.socket) -> bytes:
    """What the server sent before it closed the connection."""
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _response(conn: socket.socket) -> bytes:
    """One whole response (head and ``content-length`` body) from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_slow_or_endless_heads_and_stalled_bodies_are_cut_off(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with live_server(
        tiny_checkpoint, tmp_path, header_timeout_s="1", body_timeout_s="1", max_header_bytes="4096"
    ) as server:
        silent, slow, stalled, endless = (_connect(server.url) for _ in range(4))
        started = time.monotonic()
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        stalled.sendall(b'Content-Length: 100\r\n\r\n{"texts": ')
        endless.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 65536)
        for byte in b"GET /healthz HTTP/1.1\r\n":  # slowloris: a byte at a time
            # Until the server answers: a byte sent after it closed draws a reset, which can discard
            # the answer before the test reads it.
            if select.select([slow], [], [], 0)[0]:
                break
            slow.sendall(bytes([byte]))
            # Meanwhile other clients are served.
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            time.sleep(0.1)
        assert _answer(endless).startswith(b"HTTP/1.1 431 ")
        assert _answer(silent).startswith(b"HTTP/1.1 408 ")
        assert _answer(slow).startswith(b"HTTP/1.1 408 ")
        assert _answer(stalled).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 5
        assert "Traceback" not in server.log, server.log
        for conn in (silent, slow, stalled, endless):
            conn.close()


def test_too_many_fields_and_a_stalled_second_request_on_a_kept_connection(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with live_server(tiny_checkpoint, tmp_path, header_timeout_s="1", body_timeout_s="1") as server:
        many = _connect(server.url)
        fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(150))
        many.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert _answer(many).startswith(b"HTTP/1.1 431 ")
        kept = _connect(server.url)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, the connection kept
        assert _response(kept).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next head, never finished
        assert _answer(kept).startswith(b"HTTP/1.1 408 ")
        assert 0.5 < time.monotonic() - started < 5
        for conn in (many, kept):
            conn.close()


@pytest.mark.parametrize(("head_s", "body_s"), [(1.0, 2.0), (3.0, 1.0)])
def test_a_stalled_body_is_cut_off_at_its_own_deadline(
    tiny_checkpoint: Path, tmp_path: Path, head_s: float, body_s: float
) -> None:
    """The connection's one timer, armed for the head, still keeps the body's deadline, longer or shorter."""
    with live_server(
        tiny_checkpoint, tmp_path, header_timeout_s=str(head_s), body_timeout_s=str(body_s)
    ) as server:
        stalled = _connect(server.url)
        started = time.monotonic()
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        stalled.sendall(b'Content-Length: 100\r\n\r\n{"texts": ')
        assert _answer(stalled).startswith(b"HTTP/1.1 408 ")
        assert body_s - 0.2 < time.monotonic() - started < body_s + 1
        stalled.close()
