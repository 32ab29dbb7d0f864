"""Optional API-key auth, as pure ASGI middleware so every route, present or future, is covered.

Keys come from ``SENTIMENT_API_KEYS`` (comma-separated) and/or ``SENTIMENT_API_KEYS_FILE`` (one per
line). With no key configured the API is open, except ``/admin/*``, which then answers 403: admin
endpoints always need a key. A key is sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (one
of them, once: a request with more than one credential header is refused with 401) and compared in
constant time against every configured key. Keys are never logged.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.limits import send_error
from service.settings import Settings

# Open whatever the keys: probes, scrapers and the API docs.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PATHS |= {"/openapi.json", "/", "/favicon.ico", "/v2/health/live", "/v2/health/ready"}
PUBLIC_PREFIXES = ("/static/",)  # the demo page's assets
ADMIN_PREFIX = "/admin/"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sentiment"'}
INVALID_REQUEST = {"WWW-Authenticate": 'Bearer realm="sentiment", error="invalid_request"'}


def load_keys(settings: Settings) -> tuple[bytes, ...]:
    """Every configured key, from the environment and the keys file, as bytes."""
    raw: list[str] = []
    if settings.api_keys is not None:
        raw += settings.api_keys.get_secret_value().split(",")
    if settings.api_keys_file is not None:
        raw += _read_keys_file(settings.api_keys_file)
    return tuple(dict.fromkeys(k.strip().encode() for k in raw if k.strip()))


def _read_keys_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read API keys file {path}: {exc}") from exc
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"API keys file {path} has no keys")
    return keys


class AmbiguousKey(ValueError):
    """The request carries more than one credential: which one to judge is not ours to guess."""


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries in ``Authorization: Bearer`` or ``X-API-Key``, if any.

    Raises ``AmbiguousKey`` for more than one: two ``X-API-Key`` headers, two ``Authorization``
    headers, or a key in each. Judging only the first (or the last) would let a proxy and the service
    disagree about which key was checked (RFC 6750, section 3.1: ``invalid_request``).
    """
    api_keys = [value for name, value in headers if name == b"x-api-key"]
    authorizations = [value for name, value in headers if name == b"authorization"]
    bearer = [_bearer(value) for value in authorizations]
    keys = [k.strip() for k in api_keys] + [k for k in bearer if k is not None]
    if len(api_keys) > 1 or len(authorizations) > 1 or len(keys) > 1:
        raise AmbiguousKey(_ambiguity(len(api_keys), len(authorizations)))
    return keys[0] if keys else None


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


def _ambiguity(api_keys: int, authorizations: int) -> str:
    counts = {"X-API-Key": api_keys, "Authorization": authorizations}
    found = " and ".join(f"{n} {name}" for name, n in counts.items() if n)
    return (
        f"more than one credential in the request ({found} headers): "
        "send exactly one, as Authorization: Bearer <key> or X-API-Key: <key>"
    )


def key_is_valid(key: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Constant-time check against every key (no early exit that would tell which one nearly matched)."""
    if key is None:
        return False
    matches = [hmac.compare_digest(key, k) for k in keys]
    return any(matches)


class ApiKeyMiddleware:
    """401 (with ``WWW-Authenticate``) without a valid key or with more than one; 403 on admin routes
    when no key is set."""

    def __init__(self, app: ASGIApp, keys: tuple[bytes, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        admin = path.startswith(ADMIN_PREFIX)
        if not admin and (not self.keys or is_public(path)):
            return await self.app(scope, receive, send)
        if not self.keys:
            return await send_error(
                send,
                403,
                "admin endpoints are disabled: no API key is configured "
                "(set SENTIMENT_API_KEYS or SENTIMENT_API_KEYS_FILE)",
            )
        try:
            key = presented_key(scope["headers"])
        except AmbiguousKey as exc:
            # 401, the answer every keyed route documents, with RFC 6750's error code in the challenge.
            return await send_error(send, 401, str(exc), INVALID_REQUEST)
        if not key_is_valid(key, self.keys):
            why = "no API key" if key is None else "an invalid API key"
            message = f"{why}: send Authorization: Bearer <key> or X-API-Key: <key>"
            return await send_error(send, 401, message, CHALLENGE)
        await self.app(scope, receive, send)


def needs_key(path: str, keys_configured: bool) -> bool:
    """Whether a route answers 401 without a key (for the OpenAPI description)."""
    return path.startswith(ADMIN_PREFIX) or (keys_configured and not is_public(path))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
