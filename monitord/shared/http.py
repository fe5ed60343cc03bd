"""The request side of the daemon's HTTP listener, for every route (the API's, and those a probe
kind adds through :attr:`~monitord.shared.probe.ProbeKind.setup`): limits, JSON refusals,
bearer tokens, bodies and ids. The listener itself (:mod:`monitord.edge.listener`) enforces
the limits on connections.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import resource
from dataclasses import dataclass, field
from typing import Iterable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from monitord.shared.fields import SecretRef, parse_id

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024


def connection_budget() -> int:
    """A quarter of the process's file-descriptor limit (at most :data:`MAX_CONNECTIONS`)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 4))


@dataclass(frozen=True)
class Limits:
    """What one client may take from the listener."""

    max_connections: int = field(default_factory=connection_budget)
    idle_timeout: float = 10.0
    body_timeout: float = 10.0
    max_body: int = 64 * 1024

    @property
    def backlog(self) -> int:
        """Connections the kernel queues, and the event loop accepts in one go: an eighth of the cap.

        asyncio accepts up to this many sockets each loop turn, and each reaches the cap's check
        (``connection_made``) only a few turns later; meanwhile they hold descriptors. An eighth
        keeps a flood's overshoot to about half the cap, far inside the descriptor limit (the cap
        is a quarter of it), so probes and pagers never meet "Too many open files".
        """
        return max(4, min(128, self.max_connections // 8))


LIMITS = web.AppKey("limits", Limits)


class Refusal(web.HTTPClientError):
    """A 4xx answer with a JSON reason, ``{"error": why}``; raise it from a handler."""

    def __init__(self, status: int, why: str, **headers: str):
        self.status_code = status
        super().__init__(text=json.dumps({"error": why}), content_type="application/json", headers=headers or None)
        self.why = why


def unauthorised() -> Refusal:
    """The one answer to every request without a valid token, whatever it asked for."""
    return Refusal(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="monitord"'})


def bearer_token(request: web.Request) -> bytes:
    """The bearer token the request carries (empty if none)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return b""
    return given.strip().encode("utf-8", "surrogateescape")  # header bytes as sent


def read_token(ref: SecretRef, what: str) -> str | None:
    """The value of a token secret, or None (logged, without the value) if it cannot be read."""
    try:
        return ref.read()
    except (LookupError, UnicodeError) as exc:
        log.error("%s unreadable: %s", what, exc)
        return None


def token_matches(given: bytes, tokens: Iterable[str | None]) -> bool:
    """Whether ``given`` is one of ``tokens`` (None: unreadable), each compared in constant time."""
    matched = False
    for token in tokens:
        if token:
            matched |= hmac.compare_digest(given, token.encode())
    return matched and bool(given)


def path_id(request: web.Request, name: str) -> int:
    """A numeric path parameter: plain ASCII digits only (no signs, spaces or other scripts' digits)."""
    try:
        return parse_id(request.match_info[name])
    except ValueError as exc:
        raise Refusal(400, f"the {name} {exc}") from None


def loads(raw: bytes) -> object:
    """Parse a JSON document; :class:`ValueError` says what is wrong (bad UTF-8, syntax, nesting)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded; a slow, oversized or undecodable body is refused."""
    limits = request.app.get(LIMITS) or Limits()
    try:
        async with asyncio.timeout(limits.body_timeout):
            return await request.read()
    except TimeoutError:
        raise Refusal(408, f"the body did not arrive within {limits.body_timeout:g}s") from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # bad Content-Encoding data, broken chunks
        raise Refusal(400, f"the body cannot be read: {reason_of(exc)}") from None
    except ConnectionError:
        raise Refusal(400, "the connection closed before the body arrived") from None


def reason_of(exc: BaseException | None, message: str | None = None) -> str:
    """aiohttp's (often multi-line) description of a protocol error, on one line."""
    text = message or getattr(exc, "message", None) or getattr(exc.__cause__, "message", None) or str(exc)
    return " ".join(str(text).split())[:200] or "bad request"
