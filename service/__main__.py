"""``python -m service`` (or ``sentiment-serve``): serve a checkpoint with uvicorn.

Flags override ``SENTIMENT_*`` environment variables, which override a ``.env`` file, which overrides
the defaults. A flag is passed on as its environment variable, so that every uvicorn worker process
reads the same settings. Every problem found before serving is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from model.checkpoint import load_checkpoint
from model.predictor import resolve_device
from service.admission import GuardedHttpToolsProtocol, load_keys
from service.observability import configure_logging
from service.settings import Settings, get_settings

log = logging.getLogger("service")
PREFIX = "SENTIMENT_"
# The settings people change most; every other one is its environment variable only. API keys are
# deliberately not flags: a command line is visible to every user of the machine (ps).
FLAGS = (
    "checkpoint",
    "host",
    "port",
    "workers",
    "device",
    "log_level",
    "log_format",
    "model_name",
    "torch_threads",
    "max_batch_size",
    "request_timeout_s",
    "cors_origins",
)
# SENTIMENT_* names that are not service settings: training's data directory, the compose files'
# variables, the container's entry point, the fuzz test.
OTHER_NAMES = {
    "DATA_DIR",
    "BUILTIN_CHECKPOINT",
    "IMAGE",
    "NGINX_IMAGE",
    "BUILD_NETWORK",
    "BIND_ADDRESS",
    "PUBLISH_PORT",
    "GPU_COUNT",
    "REPLICAS",
    "FUZZ_EXAMPLES",
}


def parser() -> argparse.ArgumentParser:
    fields = Settings.model_fields
    cli = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve a sentiment checkpoint over HTTP (docs at /docs once it runs).",
        epilog=f"Every setting is also an environment variable ({PREFIX}<NAME>, or a line in .env); "
        "the full list is in docs/operations.md. API keys: SENTIMENT_API_KEYS or SENTIMENT_API_KEYS_FILE.",
    )
    for name in FLAGS:
        field = fields[name]
        unset = field.default in (None, [])
        where = f"{PREFIX}{name.upper()}" if unset else f"default: {field.default}; {PREFIX}{name.upper()}"
        help_text = f"{field.description or name.replace('_', ' ')} ({where})"
        choices = getattr(field.annotation, "__args__", None) if name.startswith("log_") else None
        cli.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.split("_")[-1].upper(),
            choices=choices,
            help=help_text,
        )
    return cli


def unknown_names(environ: dict[str, str]) -> list[str]:
    """A warning for each ``SENTIMENT_*`` variable that is no setting, with the likely one meant."""
    known = {name.upper() for name in Settings.model_fields}
    warnings = []
    for key in sorted(environ):
        name = key.removeprefix(PREFIX)
        if key.startswith(PREFIX) and name not in known | OTHER_NAMES:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
            warnings.append(f"warning: {key} is not a setting and is ignored{hint}")
    return warnings


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse the flags (``SystemExit(2)`` with usage on an unknown one), export them, read the settings."""
    args = parser().parse_args(argv)
    for name, value in vars(args).items():
        if value is not None:
            os.environ[PREFIX + name.upper()] = value
    get_settings.cache_clear()
    return get_settings()


def describe(exc: ValidationError) -> str:
    """A validation failure as one line that names the variable and the flag."""
    parts = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        flag = f" (--{name.replace('_', '-')})" if name in FLAGS else ""
        parts.append(f"{PREFIX}{name.upper()}{flag}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def preflight(settings: Settings) -> str | None:
    """Fail fast, before uvicorn starts: the device, the port, the keys file, then the checkpoint."""
    try:
        resolve_device(settings.device)
    except RuntimeError:  # torch's "Expected one of cpu, cuda, ... device type"
        return f"SENTIMENT_DEVICE={settings.device} is not a device: use auto, cpu, cuda or cuda:N"
    except ValueError as exc:  # a CUDA device without CUDA
        return f"SENTIMENT_DEVICE={settings.device}: {exc}; use auto or cpu"
    if settings.workers == 1 and (taken := _port_taken(settings.host, settings.port)):
        return f"{settings.host}:{settings.port} cannot be bound ({taken}): choose another --port"
    try:
        load_keys(settings)
        load_checkpoint(settings.checkpoint)
    except ValueError as exc:  # CheckpointError is a ValueError and names the file
        return str(exc)
    return None


def _port_taken(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    for warning in unknown_names(dict(os.environ)):
        print(warning, file=sys.stderr)
    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        print(f"cannot start: {describe(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if problem := preflight(settings):
        log.error("cannot start: %s", problem)
        return 2
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; this handler
    # turns that into a clean exit 0 instead of death by signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=math.ceil(settings.keep_alive_s),
        limit_concurrency=settings.max_connections,
        log_level=settings.log_level,
        log_config=None,  # configure_logging above already routes uvicorn's loggers
        access_log=False,  # service.access logs each request, with its request id
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        workers=settings.workers,  # >1: processes side by side, each with its own model
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
