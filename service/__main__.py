"""``python -m service``: serve the configured checkpoint with uvicorn."""

from __future__ import annotations

import logging
import math
import signal
import sys

import uvicorn
from pydantic import ValidationError

from model.checkpoint import load_checkpoint
from service.auth import load_keys
from service.observability import configure_logging
from service.settings import Settings, get_settings

log = logging.getLogger("service")


def main() -> int:
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    problem = preflight(settings)
    if problem:
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
        log_level=settings.log_level,
        log_config=None,  # configure_logging above already routes uvicorn's loggers
        access_log=False,  # service.access logs each request, with its request id
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        workers=settings.workers,  # >1: processes side by side, each with its own model
    )
    return 0


def preflight(settings: Settings) -> str | None:
    """Fail fast, before uvicorn starts, on a checkpoint or keys file that cannot be used."""
    try:
        load_checkpoint(settings.checkpoint)
        load_keys(settings)
    except ValueError as exc:  # CheckpointError is a ValueError and names the file
        return str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
