"""Overload over loopback: far more concurrent requests than the queue holds, each answered exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.service.live_server import live_server

REQUESTS = 150
QUEUE_TEXTS = 8


async def _wait_not_ready(url: str, timeout: float = 5) -> list[int]:
    """Poll /readyz until it reports the full queue (or ``timeout`` passes); the codes seen."""
    codes: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=5) as probe:
        deadline = time.monotonic() + timeout
        while 503 not in codes and time.monotonic() < deadline:
            codes.append((await probe.get("/readyz")).status_code)
            await asyncio.sleep(0.005)
    return codes


async def _burst(url: str) -> tuple[list[httpx.Response | Exception], list[int]]:
    """Fill the queue, watch readiness turn false, then pile on far more requests than it holds."""
    limits = httpx.Limits(max_connections=REQUESTS + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=20) as client:

        async def one(i: int) -> httpx.Response | Exception:
            try:
                return await client.post("/predict", json={"texts": [f"request number {i}, i love it"]})
            except httpx.HTTPError as exc:
                return exc

        first = [asyncio.create_task(one(i)) for i in range(QUEUE_TEXTS)]
        readiness = await _wait_not_ready(url)
        rest = [asyncio.create_task(one(i)) for i in range(QUEUE_TEXTS, REQUESTS)]
        outcomes = await asyncio.wait_for(asyncio.gather(*first, *rest), 60)
        return outcomes, readiness


@pytest.mark.slow
def test_every_request_gets_one_answer_under_overload(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # Batches wait up to 1 s to fill: the queue stays full long enough to watch readiness turn false.
    settings = {"max_queue_texts": str(QUEUE_TEXTS), "max_wait_ms": "1000", "request_timeout_s": "20"}
    with live_server(tiny_checkpoint, tmp_path, **settings) as server:
        outcomes, readiness = asyncio.run(_burst(server.url))
        after = httpx.get(f"{server.url}/readyz", timeout=5)
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text

    errors = [o for o in outcomes if isinstance(o, Exception)]
    responses = [o for o in outcomes if isinstance(o, httpx.Response)]
    codes = Counter(r.status_code for r in responses)
    print(f"\noverload: sent {REQUESTS}, answered {len(responses)} {dict(codes)}, lost {len(errors)}")
    assert not errors, errors[:3]
    assert set(codes) <= {200, 503}
    assert codes[200] >= QUEUE_TEXTS and codes[503] > 0  # some served, the rest shed at once
    assert all(r.headers.get("retry-after") == "1" for r in responses if r.status_code == 503)
    assert all(len(r.json()["predictions"]) == 1 for r in responses if r.status_code == 200)
    assert 503 in readiness  # readiness turned false while the queue was full
    assert after.status_code == 200  # and true again once it drained
    assert f'route="/predict",status="503"}} {float(codes[503])}' in metrics
