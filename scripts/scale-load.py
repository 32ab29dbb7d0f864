"""Bounded load through the load balancer, killing one replica part-way: prints what succeeded and failed.

    python scripts/scale-load.py --url http://127.0.0.1:18100 --requests 600 --concurrency 8 \
        --kill-pid 1234 --kill-after 200

Loopback only (refuses any other host); a fixed number of requests, each with a timeout, and an overall
deadline, so it always stops by itself. Exit status 0 only when every request got a 200.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

TEXTS = ["I absolutely love this, it's wonderful", "This is the worst, I hate it", "The meeting is at noon"]


def worker(args: argparse.Namespace, state: dict, lock: threading.Lock, deadline: float) -> None:
    url = urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
    body = json.dumps({"texts": TEXTS})
    while time.monotonic() < deadline:
        with lock:
            if state["sent"] >= args.requests:
                break
            state["sent"] += 1
        try:
            conn.request("POST", "/predict", body, {"content-type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            answer = json.loads(data) if response.status == 200 else {}
            ok = len(answer.get("predictions", [])) == len(TEXTS)
            outcome = "200" if ok else f"HTTP {response.status}"
            upstream = response.getheader("X-Upstream", "?")
            version = answer.get("model", {}).get("version", "-")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            outcome, upstream, version = f"error {type(exc).__name__}", "-", "-"
            conn.close()
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
        with lock:
            state["outcomes"][outcome] += 1
            state["upstreams"][upstream] += 1
            state["versions"][version] += 1
            state["done"] += 1
            if args.kill_pid and state["done"] == args.kill_after:
                os.kill(args.kill_pid, signal.SIGKILL)
                state["killed_at"] = state["done"]
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:18100", help="load balancer (loopback only)")
    parser.add_argument("--requests", type=int, default=600, help="requests to send in all")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connections")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds for the whole run")
    parser.add_argument("--kill-pid", type=int, help="process to SIGKILL mid-load (a replica)")
    parser.add_argument("--kill-after", type=int, default=200, help="kill after this many responses")
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback addresses only")
    state: dict = {"sent": 0, "done": 0, "killed_at": None}
    state["outcomes"], state["upstreams"] = collections.Counter(), collections.Counter()
    state["versions"] = collections.Counter()
    lock, start = threading.Lock(), time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(args, state, lock, start + args.deadline))
        for _ in range(args.concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    ok = state["outcomes"]["200"]
    failed = state["done"] - ok
    print(f"requests sent {state['sent']}, answered {state['done']}, succeeded {ok}, failed {failed}")
    print(f"outcomes {dict(state['outcomes'])}")
    print(f"served by {dict(sorted(state['upstreams'].items()))}")
    print(f"model versions {dict(state['versions'])}")
    if args.kill_pid:
        print(f"replica pid {args.kill_pid} killed (SIGKILL) after {state['killed_at']} responses")
    print(f"{seconds:.1f} s, {state['done'] / seconds:.0f} requests/s")
    return 0 if failed == 0 and state["done"] == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
