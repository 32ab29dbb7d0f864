"""The demo page at ``/``: plain HTML, CSS and JavaScript from ``service/static/``, no CDN, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
# Only files that exist at start-up are served, by exact name: no path ever reaches the file system.
ASSETS = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate, so a new release's page is picked up at once

router = APIRouter(include_in_schema=False)


@router.get("/")
async def demo_page() -> FileResponse:
    """Type a text, see its label, probabilities and the words that decided it."""
    return _asset("index.html")


@router.get("/static/{name}")
async def static_asset(name: str) -> FileResponse:
    return _asset(name)


def _asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    return FileResponse(path, headers=NO_CACHE)
