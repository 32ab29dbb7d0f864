"""Connection hygiene in the server itself, whatever sits in front of it.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``) and
bounds concurrent connections (``limit_concurrency``), but it sets no deadline for a request's head or
body and no bound on the head's size: a client that opens a connection and sends nothing, or a header a
byte a second (slowloris), or megabytes of header that never end, holds a connection and memory for
ever. ``GuardedHttpToolsProtocol`` adds those three bounds to uvicorn's own httptools protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import get_settings

MAX_HEADERS = 100


def _close(transport: asyncio.Transport, status: bytes, message: str) -> None:
    if transport.is_closing():
        return
    body = message.encode()
    transport.write(
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    transport.close()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol, plus a deadline for each request's head and body and a bound on the head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()  # from the environment, in each worker process alike
        self.head_timeout_s, self.body_timeout_s = settings.header_timeout_s, settings.body_timeout_s
        self.max_head_bytes = settings.max_header_bytes
        self._in_head = True  # reading a request's head (or waiting for one to start)
        self._head_bytes = 0
        self._headers = 0
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, status: bytes, message: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, _close, self.transport, status, message)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout_s, b"408 Request Timeout", "no complete request head in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._deadline is None:  # the next request on a keep-alive connection
            self._arm(self.head_timeout_s, b"408 Request Timeout", "no complete request head in time")
        super().data_received(data)
        if self._in_head:  # the parser holds at most one read of the head beyond the bound
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                _close(self.transport, b"431 Request Header Fields Too Large", "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            _close(self.transport, b"431 Request Header Fields Too Large", "too many header fields")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.body_timeout_s, b"408 Request Timeout", "request body not received in time")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._in_head, self._head_bytes, self._headers = True, 0, 0
        super().on_response_complete()  # arms uvicorn's keep-alive timeout for the idle wait
