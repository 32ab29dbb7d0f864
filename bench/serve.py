"""Serving speed in one run: the model-only limit, then the HTTP service with batching on and off.

    .venv/bin/python -m bench.serve                      # about 3 minutes (8 s per cell, 60 s soak)
    .venv/bin/python -m bench.serve --duration 4 --soak 0   # a quick look, under a minute
    .venv/bin/python -m bench.serve --quantization          # fp32 vs int8: test-split accuracy, speed
    .venv/bin/python -m bench.serve --against SENTIMENT_TORCHSCRIPT=false   # one setting, paired
    .venv/bin/python -m bench.serve --against checkout=../other --concurrency 1,64,256  # code, paired
    .venv/bin/python -m bench.serve --gil                   # the forward pass beside a GIL-holding thread

1. Model-only limit: ``Predictor.predict`` texts/s at each batch size (no HTTP), best one kept.
   Shared machines drift by tens of percent within minutes, so the limit is measured again right
   before each concurrency's cells (at the sweep's best batch sizes), and each batching row is
   set against the limit measured beside it.
2. Two real uvicorn processes (``python -m service``) on 127.0.0.1, one with ``SENTIMENT_BATCHING``
   true and one false, both up for the whole run; at each concurrency the two are measured back to
   back, so a busy neighbour on a shared machine moves both figures, not just one.
3. Load from ``wrk``: one real tweet per request (the CrowdFlower tweets, shuffled), keep-alive
   connections; requests/s, p50/p95/p99 latency, errors (socket errors, timeouts and non-2xx), and
   the mean batch size from the service's ``GET /metrics`` (``sentiment_batch_size_texts``), and
   the share of the machine's CPU time that the hypervisor gave to other guests meanwhile ("CPU
   stolen", the steal column of ``/proc/stat``): on a shared VM, what makes two runs disagree.
4. Soak: the batching service at concurrency 256 for ``--soak`` seconds; resident memory at start
   and end.

Needs ``wrk`` (Debian/Ubuntu: ``sudo apt-get install -y wrk``). Both servers get the same settings
from the environment (``SENTIMENT_TORCH_THREADS``, ``SENTIMENT_WORKERS``, ...), plus log level
warning so that no log line is written per request.

``--sentences`` compares ``/predict`` with ``"sentences": true`` against without, same texts, one service;
``--long-text 20000`` times one 20,000-character text (NYT editorials) answered whole.

``--against NAME=VALUE`` measures one setting instead: two batching services, the defaults and one
with that variable changed (``checkout=DIR``: the same settings, another checkout's code, e.g. a
``git worktree`` of main), in alternating rounds (``--rounds``, ``--duration``) at each
``--concurrency`` (default 64).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from model.predictor import Predictor, configure_threads
from service.settings import Settings
from training.corpus import HUTTO, fetch
from training.data import load_crowdflower, load_default_corpus
from training.evaluate import evaluate
from training.train import TrainConfig, make_splits

# One request body per line; each wrk thread starts at its own offset. done() prints one JSON line.
LUA = r"""
local bodies, i, counter = {}, 0, 0
function setup(thread) thread:set("tid", counter); counter = counter + 1 end
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = (tonumber(tid) or 0) * 7919
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %f, "p50": %d, "p95": %d, "p99": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""
BATCH_SIZES = (1, 8, 16, 32, 64, 128, 256)


@dataclass
class Cell:
    mode: str
    concurrency: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float | None
    errors: int
    limit: float | None = None  # model-only texts/s, measured just before this cell
    stolen: float | None = None  # share of the machine's CPU time the hypervisor gave elsewhere


def bench_predictor(texts: list[str]) -> Predictor:
    """The servers' predictor: their thread settings and model settings, from the same environment."""
    settings = Settings()  # SENTIMENT_TORCH_THREADS, _WORKERS, _CHECKPOINT, _DEVICE, _QUANTIZE, ...
    configure_threads(settings.torch_threads, settings.workers)
    predictor = Predictor.from_checkpoint(
        settings.checkpoint, settings.device, quantize=settings.quantize, torchscript=settings.torchscript
    )
    predictor.predict(texts[:64])  # warm-up
    return predictor


def model_only(
    predictor: Predictor, texts: list[str], seconds: float, sizes: tuple[int, ...] = BATCH_SIZES
) -> dict[int, float]:
    """Predictor texts/s at each batch size."""
    return {size: _rate(predictor, texts, size, seconds) for size in sizes}


def quantization_check(seconds: float) -> None:
    """fp32 against int8 on the checkpoint's own test split: accuracy, macro-F1 and speed."""
    configure_threads(int(os.environ.get("SENTIMENT_TORCH_THREADS") or 0) or None)
    checkpoint = load_checkpoint(DEFAULT_CHECKPOINT)
    split = {
        k: checkpoint.training[k]
        for k in ("seed", "val_fraction", "test_fraction")
        if k in checkpoint.training
    }
    test = make_splits(load_default_corpus(), replace(TrainConfig(), **split)).test
    print(f"checkpoint {DEFAULT_CHECKPOINT.name} version {checkpoint.version}, test split: {len(test)} texts")
    print("| | accuracy | macro-F1 | texts/s at 1 | texts/s at 64 |\n|---|---:|---:|---:|---:|")
    for quantize in (False, True):
        predictor = Predictor(load_checkpoint(DEFAULT_CHECKPOINT), device="cpu", quantize=quantize)
        report = evaluate(predictor, test)
        speed = [max(_rate(predictor, test.texts, size, seconds) for _ in range(3)) for size in (1, 64)]
        print(
            f"| {'int8' if quantize else 'fp32'} | {report['accuracy']:.2%} | {report['macro_f1']:.4f} "
            f"| {speed[0]:,.0f} | {speed[1]:,.0f} |"
        )


def gil_check(texts: list[str], rounds: int = 7) -> None:
    """``Predictor.predict`` on 32 texts alone and beside a thread holding the GIL half the time.

    The thread stands in for the event loop: Python in 0.2 ms bursts, then 0.2 ms with the GIL free.
    Every time the forward pass takes the GIL back from it, it waits up to a switch interval. Eager
    and scripted predictors alternate, alone then beside, for ``rounds`` rounds; medians printed.
    """
    configure_threads(1)
    settings = Settings()  # the service's SENTIMENT_GIL_SWITCH_MS and SENTIMENT_CHECKPOINT
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    print(f"GIL switch interval {settings.gil_switch_ms:g} ms")
    batches = [texts[i : i + 32] for i in range(0, 32 * 30, 32)]
    predictors = {
        name: Predictor.from_checkpoint(settings.checkpoint, device="cpu", torchscript=torchscript)
        for name, torchscript in (("eager PyTorch", False), ("TorchScript, one call (default)", True))
    }
    holding = threading.Event()

    def hold_the_gil() -> None:
        while True:
            holding.wait()
            start = time.perf_counter()
            while time.perf_counter() - start < 0.0002:
                pass
            time.sleep(0.0002)

    def per_batch_ms(predictor: Predictor) -> float:
        start = time.perf_counter()
        for batch in batches:
            predictor.predict(batch)
        return (time.perf_counter() - start) / len(batches) * 1000

    threading.Thread(target=hold_the_gil, daemon=True).start()
    times: dict[tuple[str, bool], list[float]] = {(n, b): [] for n in predictors for b in (False, True)}
    for predictor in predictors.values():
        per_batch_ms(predictor)  # warm-up
    for _ in range(rounds):
        for beside in (False, True):
            if beside:
                holding.set()
            else:
                holding.clear()
            for name, predictor in predictors.items():
                times[name, beside].append(per_batch_ms(predictor))
    holding.clear()
    print("| forward pass | alone, ms per 32 texts | beside the GIL holder | slowdown |")
    print("|---|---:|---:|---:|")
    for name in predictors:
        alone, held = (statistics.median(times[name, b]) for b in (False, True))
        print(f"| {name} | {alone:.2f} | {held:.2f} | {held / alone:.2f}x |")


def _rate(predictor: Predictor, texts: list[str], size: int, seconds: float) -> float:
    predictor.batch_size = size
    done, start, k = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch = texts[k : k + size]
        k = (k + size) % (len(texts) - size)
        predictor.predict(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        """Resident memory of the server and all its descendants (workers, model processes)."""
        pids = [self.process.pid, *_descendants(self.process.pid)]
        return sum(_rss_kib(pid) for pid in pids) / 1024

    def batches(self) -> tuple[float, float] | None:
        """(texts, batches) so far, from the batch-size histogram of ``GET /metrics``."""
        try:
            text = http_get(f"{self.url}/metrics")
        except OSError:
            return None
        found = dict(re.findall(r"^sentiment_batch_size_texts_(sum|count) (\S+)$", text, re.M))
        return (float(found["sum"]), float(found["count"])) if len(found) == 2 else None


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a model process is the child of the thread that started it)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    return children + [d for child in children for d in _descendants(child)]


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0


def model_name(name: str, port: int) -> str:
    """A name unique to one bench server, in the characters every version's model-name pattern accepts
    (``name`` may hold a path)."""
    return f"bench-{re.sub(r'[^A-Za-z0-9._-]', '-', name)[-40:]}-{port}"


@contextmanager
def serve(
    name: str, batching: bool, log: Path, extra_env: dict[str, str] | None = None, code: Path | None = None
) -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "SENTIMENT_PORT": str(port), "SENTIMENT_HOST": "127.0.0.1"}
    env |= {"SENTIMENT_BATCHING": str(batching).lower(), "SENTIMENT_LOG_LEVEL": "warning"}
    env |= {"SENTIMENT_MODEL_NAME": model_name(name, port), **(extra_env or {})}
    for key in ("SENTIMENT_API_KEYS", "SENTIMENT_API_KEYS_FILE"):  # an open service is measured
        env.pop(key, None)
    with log.open("wb") as out:
        # ``code``: another checkout's service, run from its root so that its modules are imported.
        process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=env, stdout=out, stderr=out, cwd=code
        )
    server = Server(name, port, process)
    try:
        _wait_ready(server, log)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(server: Server, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"the {server.name} server exited; its log:\n{log.read_text()}")
        try:
            http_get(f"{server.url}/readyz")
        except OSError:
            time.sleep(0.2)
            continue
        # Another process may have taken the port between free_port() and our bind: check the name.
        name = json.loads(http_get(f"{server.url}/v1/model"))["name"]
        if name != model_name(server.name, server.port):
            raise SystemExit(f"port {server.port} is answered by another server ({name!r}); run again")
        return
    raise SystemExit(f"the {server.name} server was not ready within {timeout:.0f} s; see {log}")


def wrk(server: Server, concurrency: int, seconds: float, files: Path) -> dict:
    command = [
        "wrk",
        f"--threads={min(concurrency, 2)}",
        f"--connections={concurrency}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=10s",
        f"--script={files / 'load.lua'}",
        f"{server.url}/predict",
        "--",
        str(files / "bodies.jsonl"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    return dict(json.loads(line[len("RESULT ") :]))


def cpu_times() -> tuple[int, int] | None:
    """(stolen, total) CPU ticks of the whole machine since boot, from ``/proc/stat`` (Linux only)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    ticks = [int(x) for x in first[1:9]]
    return (ticks[7], sum(ticks)) if first[0] == "cpu" and len(ticks) == 8 else None


def stolen_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def measure(server: Server, concurrency: int, seconds: float, files: Path) -> Cell:
    before, ticks = server.batches(), cpu_times()
    result = wrk(server, concurrency, seconds, files)
    after, stolen = server.batches(), stolen_share(ticks, cpu_times())
    mean_batch = None
    if before and after and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return Cell(
        server.name,
        concurrency,
        result["requests"] / result["seconds"],
        result["p50"] / 1000,
        result["p95"] / 1000,
        result["p99"] / 1000,
        mean_batch,
        int(result["errors"]),
        stolen=stolen,
    )


def soak(server: Server, seconds: float, files: Path) -> tuple[float, float, Cell]:
    start = server.rss_mib()
    cell = measure(server, 256, seconds, files)
    return start, server.rss_mib(), cell


@contextmanager
def load_files(texts: list[str], options: dict | None = None) -> Iterator[Path]:
    """wrk's Lua script and one request body per line (with ``options``), in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        files = Path(tmp)
        (files / "load.lua").write_text(LUA)
        lines = (json.dumps({"texts": [t], **(options or {})}) for t in texts[:5000])
        (files / "bodies.jsonl").write_text("\n".join(lines) + "\n")
        yield files


def against(change: str, texts: list[str], concurrencies: list[int], args: argparse.Namespace) -> int:
    """The batching service with its defaults and with ``NAME=VALUE`` (or another checkout's code, for
    ``checkout=DIR``), in alternating rounds."""
    name, _, value = change.partition("=")
    if not name or not value:
        print(f"--against wants NAME=VALUE or checkout=DIR, got {change!r}", file=sys.stderr)
        return 2
    code = Path(value).resolve() if name == "checkout" else None
    if code is not None and not (code / "service" / "__main__.py").is_file():
        print(f"--against checkout={value}: no service/__main__.py there", file=sys.stderr)
        return 2
    print(f"machine: {machine()}\n{args.rounds} rounds of {args.duration:.0f} s per concurrency", flush=True)
    cells: list[Cell] = []
    with (
        load_files(texts) as files,
        serve("defaults", True, files / "a.log") as base,
        serve(change, True, files / "b.log", None if code else {name: value}, code) as other,
    ):
        for server in (base, other):
            wrk(server, 16, 3, files)  # warm-up
        for concurrency, k in itertools.product(concurrencies, range(args.rounds)):
            for server in (base, other) if k % 2 == 0 else (other, base):
                cells.append(measure(server, concurrency, args.duration, files))
                print(table(cells[-1:]).splitlines()[-1], flush=True)
    for concurrency in concurrencies:
        for server_name in ("defaults", change):
            got = [c for c in cells if c.mode == server_name and c.concurrency == concurrency]
            rps = ", ".join(f"{c.rps:,.0f}" for c in got)
            p99 = ", ".join(f"{c.p99_ms:.1f}" for c in got)
            print(f"c={concurrency} {server_name}: requests/s {rps}; p99 ms {p99}")
    return 0


def sentences_check(texts: list[str], concurrencies: list[int], args: argparse.Namespace) -> int:
    """One batching service, the same texts with ``"sentences": false`` and ``true``, alternating rounds."""
    print(f"machine: {machine()}\n{args.rounds} rounds of {args.duration:.0f} s per concurrency", flush=True)
    cells: list[Cell] = []
    with (
        load_files(texts) as off,
        load_files(texts, {"sentences": True}) as on,
        serve("sentences", True, off / "server.log") as server,
    ):
        wrk(server, 16, 3, off)  # warm-up
        for concurrency, k in itertools.product(concurrencies, range(args.rounds)):
            for mode, files in (("off", off), ("on", on)) if k % 2 == 0 else (("on", on), ("off", off)):
                cells.append(
                    replace(measure(server, concurrency, args.duration, files), mode=f"sentences {mode}")
                )
                print(table(cells[-1:]).splitlines()[-1], flush=True)
    for concurrency, mode in itertools.product(concurrencies, ("off", "on")):
        got = [c for c in cells if c.mode == f"sentences {mode}" and c.concurrency == concurrency]
        print(
            f"c={concurrency} sentences {mode}: requests/s {', '.join(f'{c.rps:,.0f}' for c in got)} "
            f"(median {statistics.median(c.rps for c in got):,.0f}); p99 ms "
            + ", ".join(f"{c.p99_ms:.1f}" for c in got)
        )
    return 0


def long_text(chars: int) -> str:
    """``chars`` characters of NYT editorials, whole sentences in file order (the Hutto set)."""
    rows = HUTTO.directory.joinpath("nyt.tsv").read_text(encoding="utf-8").splitlines()
    text = ""
    for row in rows:
        sentence = row.split("\t", 2)[2].strip()
        if len(text) + len(sentence) + 1 > chars:
            break
        text += (" " if text else "") + sentence
    return text


def long_text_check(chars: int, requests: int) -> int:
    """Latency of one text of ``chars`` characters, whole and with sentences, one request at a time."""
    fetch(HUTTO)
    text = long_text(chars)
    print(f"machine: {machine()}; CPUs for this process and the server: {len(os.sched_getaffinity(0))}")
    with (
        tempfile.TemporaryDirectory(prefix="bench-long-") as tmp,
        serve("long", True, Path(tmp) / "log") as server,
    ):
        for options in ({}, {"sentences": True}):
            body = json.dumps({"texts": [text], **options}).encode()
            times = []
            for k in range(requests + 3):
                start = time.perf_counter()
                request = urllib.request.Request(
                    f"{server.url}/predict", body, {"content-type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                if k >= 3:  # the first ones warm up
                    times.append(1000 * (time.perf_counter() - start))
            times.sort()
            parts = len(answer["predictions"][0].get("sentences", [])) or "n/a"
            print(
                f"{len(text):,} characters, {options or 'whole'}: p50 {statistics.median(times):.1f} ms, "
                f"p95 {times[int(0.95 * (len(times) - 1))]:.1f} ms, max {times[-1]:.1f} ms over "
                f"{len(times)} requests; sentences in the answer: {parts}",
                flush=True,
            )
    return 0


def table(cells: list[Cell]) -> str:
    lines = [
        "| batching | concurrency | requests/s | p50 ms | p95 ms | p99 ms | mean batch | errors "
        "| model-only limit beside it | CPU stolen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        batch = f"{c.mean_batch:.1f}" if c.mean_batch is not None else "n/a"
        limit = f"{c.limit:,.0f} ({c.rps / c.limit:.0%})" if c.limit else ""
        stolen = f"{c.stolen:.0%}" if c.stolen is not None else "n/a"
        lines.append(
            f"| {c.mode} | {c.concurrency} | {c.rps:,.0f} | {c.p50_ms:.1f} | {c.p95_ms:.1f} "
            f"| {c.p99_ms:.1f} | {batch} | {c.errors} | {limit} | {stolen} |"
        )
    return "\n".join(lines)


def verdict(cells: list[Cell], limit: float) -> list[str]:
    """The issue's targets, each with its figure."""
    get = {(c.mode, c.concurrency): c for c in cells}
    out = []
    on, off = get.get(("on", 64)), get.get(("off", 64))
    if on and off:
        out.append(f"c=64: {on.rps / off.rps:.2f}x batching off (target >= 3x)")
        beside = on.limit or limit
        out.append(
            f"c=64: {on.rps / beside:.0%} of the model-only limit measured beside it, {beside:,.0f} texts/s "
            f"({on.rps / limit:.0%} of the one at the start, {limit:,.0f}) (target >= 70%)"
        )
        out.append(f"c=64: p99 {on.p99_ms:.1f} ms (target <= 50 ms); errors {on.errors} (target 0)")
    on, off = get.get(("on", 1)), get.get(("off", 1))
    if on and off:
        out.append(f"c=1: p50 {on.p50_ms:.2f} ms vs {off.p50_ms:.2f} ms off (target: no worse)")
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, torch {torch.__version__}, Python {platform.python_version()}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=8, help="seconds of load per cell")
    parser.add_argument(
        "--concurrency",
        help="comma-separated numbers of open connections (default 1,16,64,256; with --against, 64)",
    )
    parser.add_argument("--soak", type=float, default=60, help="seconds at concurrency 256 (0: skip)")
    parser.add_argument("--model-seconds", type=float, default=1.5, help="seconds per model-only size")
    parser.add_argument("--json", type=Path, help="also write every figure here as JSON")
    parser.add_argument("--seed", type=int, default=0, help="order of the corpus sentences")
    parser.add_argument(
        "--against",
        metavar="NAME=VALUE",
        help="only compare the batching service with one environment variable changed (or checkout=DIR: "
        "another checkout's code), paired, then exit (no soak, no --json)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="--against: alternating rounds")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="only time the forward pass alone and beside a thread holding the GIL (eager and scripted)",
    )
    parser.add_argument(
        "--sentences",
        action="store_true",
        help="only compare requests/s of /predict with sentences off and on, same texts, one batching "
        "service, alternating rounds (--rounds, --duration, --concurrency: default 64), then exit",
    )
    parser.add_argument(
        "--long-text",
        type=int,
        metavar="CHARS",
        help="only time one text of CHARS characters (e.g. 20000), whole and with sentences, one "
        "request at a time; for 2 cores run under `taskset -c 0,1`",
    )
    parser.add_argument("--requests", type=int, default=30, help="--long-text: requests per mode")
    parser.add_argument(
        "--quantization",
        action="store_true",
        help="only compare fp32 and int8 (accuracy on the checkpoint's test split, speed), then exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quantization:
        quantization_check(args.model_seconds)
        return 0
    if args.gil:
        texts = list(load_crowdflower().texts)
        random.Random(args.seed).shuffle(texts)
        gil_check(texts)
        return 0
    if args.long_text:
        return long_text_check(args.long_text, args.requests)
    if shutil.which("wrk") is None:
        print("bench.serve needs wrk: sudo apt-get install -y wrk (Debian/Ubuntu)", file=sys.stderr)
        return 2
    default = "64" if args.against or args.sentences else "1,16,64,256"
    concurrencies = [int(c) for c in (args.concurrency or default).split(",")]
    texts = list(load_crowdflower().texts)
    random.Random(args.seed).shuffle(texts)
    if args.against:
        return against(args.against, texts, concurrencies, args)
    if args.sentences:
        return sentences_check(texts, concurrencies, args)
    print(f"machine: {machine()}", flush=True)
    predictor = bench_predictor(texts)
    rates = model_only(predictor, texts, args.model_seconds)
    best = max(rates, key=rates.__getitem__)
    print("model only (texts/s by batch size): " + ", ".join(f"{b}: {r:,.0f}" for b, r in rates.items()))
    print(f"model-only limit: {rates[best]:,.0f} texts/s at batch size {best}", flush=True)
    top = tuple(sorted(rates, key=rates.__getitem__)[-2:])  # the limit's sizes, measured again

    cells: list[Cell] = []
    with (
        load_files(texts) as files,
        serve("on", True, files / "on.log") as on,
        serve("off", False, files / "off.log") as off,
    ):
        rss_start = {s.name: s.rss_mib() for s in (on, off)}
        for server in (on, off):
            wrk(server, 16, 3, files)  # warm-up
        for concurrency in concurrencies:
            limit = max(model_only(predictor, texts, args.model_seconds, top).values())
            for server in (on, off):
                cells.append(measure(server, concurrency, args.duration, files))
                cells[-1].limit = limit if server is on else None
                print(table(cells[-1:]).splitlines()[-1], flush=True)
        rss_end = {s.name: s.rss_mib() for s in (on, off)}
        soaked = soak(on, args.soak, files) if args.soak else None

    print(f"\nmachine: {machine()}")
    print(f"model-only limit at the start: {rates[best]:,.0f} texts/s (batch size {best})\n")
    print(table(cells))
    print("\nresident memory (MiB), start -> end of the table: ", end="")
    print(", ".join(f"{name} {rss_start[name]:.0f} -> {rss_end[name]:.0f}" for name in rss_start))
    if soaked:
        start, end, cell = soaked
        print(
            f"soak, batching on, c=256 for {args.soak:.0f} s: {cell.rps:,.0f} requests/s, "
            f"p99 {cell.p99_ms:.1f} ms, {cell.errors} errors; RSS {start:.0f} -> {end:.0f} MiB"
            + (f"; CPU stolen {cell.stolen:.0%}" if cell.stolen is not None else "")
        )
    print("\n" + "\n".join(verdict(cells, rates[best])))
    if args.json:
        report = {
            "machine": machine(),
            "model_only": rates,
            "cells": [c.__dict__ for c in cells],
            "rss_mib": {"start": rss_start, "end": rss_end},
            "soak": soaked and {"rss_start": soaked[0], "rss_end": soaked[1], **soaked[2].__dict__},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
