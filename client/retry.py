"""When to retry: on 503 (overloaded, not ready), 429 (rate-limited) and transport errors (no answer at
all: connection refused, timed out), honouring ``Retry-After``."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries at most; each wait is the server's ``Retry-After`` or else exponential
    backoff (``backoff * 2**attempt``), and a server asking for more than ``max_wait`` seconds is not
    waited for: the error is raised at once, with the wait it asked for."""

    max_retries: int = 3
    backoff: float = 0.5
    max_wait: float = 30.0

    def delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or ``None``: do not retry."""
        if response.status_code not in RETRY_STATUSES:
            return None
        return self._wait(retry_after(response), attempt)

    def delay_after_error(self, attempt: int) -> float | None:
        """The same for a request that got no answer (an ``httpx.TransportError``): backoff only."""
        return self._wait(None, attempt)

    def _wait(self, asked: float | None, attempt: int) -> float | None:
        if attempt >= self.max_retries:
            return None
        wait = asked if asked is not None else self.backoff * 2**attempt
        return wait if wait <= self.max_wait else None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (it may be a number of seconds or an HTTP date); ``None`` if absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
