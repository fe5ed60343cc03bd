"""What every pager integration shares: the message, typed delivery failures, the config
base, the registry entry, and one HTTP helper that classifies responses.

A pager sends one :class:`Message` and either returns (delivered) or raises
:class:`DeliveryError`, which says whether trying again later can help. Retrying, backoff
and durability are not the pager's business: :mod:`monitord.paging.outbox` does them for all.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Callable, Literal, Mapping, Protocol

import aiohttp
from pydantic import Field

from monitord.shared.fields import Duration, SecretRef, StrictModel
from monitord.shared.redact import redact
from monitord.shared.results import Reason

Action = Literal["trigger", "acknowledge", "resolve"]
Severity = Literal["critical", "error", "warning", "info"]
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/?#]+[^\s]*$", description="http:// or https:// URL")]
ACTIONS: tuple[str, ...] = ("trigger", "acknowledge", "resolve")
SEVERITIES: tuple[str, ...] = ("critical", "error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Message:
    """One page or notice, the same for every integration.

    ``dedup_key`` names the alert across its life: the trigger, acknowledge and resolve of
    one problem share it (PagerDuty's dedup_key, Opsgenie's alias), and the outbox delivers
    each (integration, dedup_key, action, to) once. Use a key per incident (e.g.
    ``incident-42``), not per host, or a second incident of the same host is swallowed.

    ``summary`` is the one line a human sees first (e-mail subject, alert title);
    ``body`` the longer text (e-mail body, alert description); ``details`` are key/value
    facts sent as structured fields. ``to`` overrides the recipients of an e-mail
    integration (customer failure notices go to the addresses the customer chose); HTTP
    integrations ignore it. ``at`` is when the event happened (epoch seconds).
    ``incident_id`` links the delivery to the incident in the journal and is not sent.
    """

    dedup_key: str
    summary: str
    source: str
    action: Action = "trigger"
    severity: Severity = "critical"
    body: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    to: tuple[str, ...] = ()
    at: float | None = None
    incident_id: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {self.severity!r}")
        if not re.fullmatch(r"[\x21-\x7e]{1,255}", self.dedup_key):
            raise ValueError("dedup_key must be 1 to 255 printable ASCII characters without spaces")
        if not self.summary.strip():
            raise ValueError("summary must not be empty")
        object.__setattr__(self, "to", tuple(self.to))
        object.__setattr__(self, "details", dict(self.details))
        json.dumps(self.details)  # fail at enqueue time, not at delivery, if it cannot be stored

    def to_json(self) -> str:
        """The message as stored in the outbox."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Message":
        """The inverse of :meth:`to_json`."""
        data = json.loads(text)
        data["to"] = tuple(data.get("to") or ())
        return cls(**data)


class DeliveryError(Exception):
    """A delivery failed, with a typed reason.

    ``retryable`` says whether the same request may succeed later (timeouts, refused
    connections, 429, 5xx, SMTP 4xx) or never will (bad key, bad payload, 4xx, SMTP 5xx).
    ``retry_after`` is the receiver's own hint (HTTP ``Retry-After``), in seconds.
    """

    def __init__(self, reason: Reason, summary: str, retryable: bool, retry_after: float | None = None) -> None:
        summary = redact(summary)
        super().__init__(summary)
        self.reason = reason
        self.summary = summary
        self.retryable = retryable
        self.retry_after = retry_after


class IntegrationBase(StrictModel):
    """Settings every integration has; each module subclasses it with ``type`` and its own."""

    type: str
    timeout: Duration = Field(default=10.0, description="time limit of one delivery attempt")
    description: str = ""


class Pager(Protocol):
    """One configured integration, ready to send."""

    timeout: float

    async def send(self, message: Message) -> str:
        """Deliver ``message``; return a short receipt for the journal, or raise :class:`DeliveryError`."""


@dataclass(frozen=True, slots=True)
class Integration:
    """A registered integration type: its config model and how to build its pager."""

    type: str
    config: type[IntegrationBase]
    build: Callable[[Any, "HttpClient"], Pager]
    summary: str


@dataclass(frozen=True, slots=True)
class HttpReply:
    """An accepted HTTP response."""

    status: int
    text: str


_TRANSIENT_STATUS = frozenset({408, 425, 429})


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (only the delta-seconds form)."""
    if value and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        return float(value)
    return None


def read_secret(ref: SecretRef) -> str:
    """Read a secret when it is used; a missing one is retryable (the operator can fix it)."""
    try:
        return ref.read()
    except LookupError as exc:
        raise DeliveryError(Reason.AUTH, f"secret: {exc}", retryable=True) from None


class HttpClient:
    """One aiohttp session for every HTTP integration, with response classification.

    Redirects are not followed (a POST that is redirected is misconfigured). Accepted
    statuses return an :class:`HttpReply`; everything else raises :class:`DeliveryError`:
    408, 425, 429 and 5xx, timeouts and connection errors are retryable, other 3xx/4xx not.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "monitord"})
        return self._session

    async def post(self, url: str, body: Any = None, *, data: bytes | None = None,
                   headers: Mapping[str, str] | None = None, timeout: float,
                   ok: frozenset[int] | set[int] = frozenset({200, 201, 202, 204})) -> HttpReply:
        """POST ``body`` as JSON (or raw ``data``) within ``timeout`` seconds."""
        if data is None:
            data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        where = _origin(url)
        try:
            async with self._open().post(url, data=data, headers=headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = await resp.text(errors="replace")
                status, retry_after = resp.status, _retry_after(resp.headers.get("Retry-After"))
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise DeliveryError(Reason.TIMEOUT, f"{where}: no answer within {timeout:g}s", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            raise DeliveryError(Reason.REFUSED if refused else Reason.UNREACHABLE,
                                f"{where}: cannot connect: {exc.os_error}", retryable=True) from None
        except aiohttp.InvalidURL:  # its text is the URL, which may be the secret (Slack)
            raise DeliveryError(Reason.ERROR, f"{where}: not a valid URL", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(Reason.ERROR, f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None
        if status in ok:
            return HttpReply(status, text)
        said = " ".join(text.split())[:200]
        summary = f"{where}: HTTP {status}" + (f": {said}" if said else "")
        if status in _TRANSIENT_STATUS or status >= 500:
            raise DeliveryError(Reason.ERROR, summary, retryable=True, retry_after=retry_after)
        reason = Reason.AUTH if status in (401, 403) else Reason.PROTOCOL
        raise DeliveryError(reason, summary, retryable=False)

    async def aclose(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _origin(url: str) -> str:
    """``scheme://host[:port]`` only: webhook URLs carry their secret in the path."""
    match = re.match(r"^([a-z]+://[^/?#]+)", url, re.I)
    return match.group(1) if match else "<url>"
