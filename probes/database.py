"""What the database probes (``postgres``, ``mysql``) share: parameters, the run, size grading
and the rule for failed queries. Each kind's module adds only its driver: how to open a
session, run a query, read the database size and name the driver's errors.

A run connects and authenticates (``connect_seconds``), runs ``query`` (``query_seconds``) and,
when ``size_quota`` is set, reads the database size (``size_bytes``, ``size_percent``). A size at
or above ``size_warning_percent`` of the quota is WARNING, at or above ``size_critical_percent``
CRITICAL, both with reason ``threshold``: a notice for the customer (the Gold plan contacts the
customer at 90 %), never a reason to restart anything.

Failures, by reason:

- ``auth``: the server refused the login (bad user or password, no access to the database,
  database missing);
- ``refused`` / ``unreachable`` / ``timeout``: from the connection, mapped by the runner;
- ``protocol``: the peer did not speak the database's protocol, broke off, refused TLS when
  ``tls: require``, or the server failed for its own reasons (SQLSTATE class 08 connection,
  53 resources, 57 operator intervention such as shutting down, 58 system/I-O, XX internal,
  HY MySQL's general server errors such as disk full or read-only);
- ``error`` (status UNKNOWN): the server rejected the configured query itself (syntax error,
  unknown table or column, no privilege: any other SQLSTATE). Such a check cannot say whether
  the database works, and restarting the server would not fix the query.

``tls``: ``off`` never encrypts; ``prefer`` (default, as libpq and the mysql client do)
encrypts when the server offers TLS; ``require`` fails with ``protocol`` unless the session is
encrypted. The server certificate is not verified (as libpq's ``sslmode=require``): the check
is about the database answering, not about its certificate.
"""

from __future__ import annotations

import ssl
import time
from contextlib import contextmanager
from typing import Annotated, AsyncContextManager, Callable, Iterator, Literal, Protocol

from pydantic import ByteSize, Field, WithJsonSchema, model_validator

from monitord.shared.fields import Percent, SecretRef
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall

APPLICATION_NAME = "monitord"
"""How the probe's sessions introduce themselves (``pg_stat_activity``, MySQL connect attributes)."""

SERVER_FAILURE_CLASSES = frozenset({"08", "53", "57", "58", "XX", "HY"})
"""SQLSTATE classes that mean the server failed, not the query (see the module docstring)."""

Size = Annotated[
    ByteSize,
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[A-Za-z]*$"}, {"type": "integer", "minimum": 1}],
            "description": "bytes, or a size like 10GiB, 500MiB (binary) or 10GB (decimal)",
        }
    ),
]


class DatabaseParams(CheckParams):
    """Settings both database kinds share; each kind adds ``kind`` and its default ``port``."""

    user: str = Field(min_length=1)
    password: SecretRef | None = Field(default=None, description="omit for logins without a password (trust)")
    database: str | None = Field(default=None, min_length=1)
    query: str = Field(default="SELECT 1", min_length=1, description="run after login; its rows are discarded")
    tls: Literal["off", "prefer", "require"] = "prefer"
    size_quota: Size | None = Field(default=None, description="grade the database size against this quota")
    size_warning_percent: Percent = 90
    size_critical_percent: Percent = 95

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "DatabaseParams":
        if self.size_critical_percent < self.size_warning_percent:
            raise ValueError("size_critical_percent must not be less than size_warning_percent")
        return self


class Session(Protocol):
    """An open, authenticated database session, as a kind's driver module provides it."""

    async def query(self, sql: str) -> None:
        """Run ``sql`` and read (and discard) all its rows."""

    async def size_bytes(self) -> int:
        """The size of the session's database on disk, in bytes."""


Opener = Callable[[ProbeCall, DatabaseParams, str], AsyncContextManager[Session]]
"""``opener(call, params, password)``: connect and log in; the session is closed on leaving,
abruptly when leaving by an exception (including the runner's timeout cancelling the run)."""


class QueryRejected(Exception):
    """The server refused the configured query (a mistake in the query or schema, not an outage)."""


def one_line(text: str) -> str:
    """A server message as one line (summaries are single lines)."""
    return " ".join(text.split()) or "no message"


def query_error(sqlstate: str | None, message: str) -> Exception:
    """What a server error answered to a query means: a server failure or a rejected query."""
    if (sqlstate or "")[:2] in SERVER_FAILURE_CLASSES:
        return ProbeError(Reason.PROTOCOL, f"server error {sqlstate}: {one_line(message)}")
    return QueryRejected(f"{sqlstate or 'error'}: {one_line(message)}")


def protocol_error(exc: BaseException) -> Exception | None:
    """The fallback for driver exceptions: None (the runner maps it) for timeouts and OS errors
    with an errno (refused, unreachable, reset); anything else means the peer's answers made no
    sense to the driver: PROTOCOL."""
    if isinstance(exc, TimeoutError) or (isinstance(exc, OSError) and exc.errno is not None):
        return None
    return ProbeError(Reason.PROTOCOL, f"protocol error: {one_line(str(exc)) if str(exc) else type(exc).__name__}")


@contextmanager
def translated(translate: Callable[[Exception], BaseException | None]) -> Iterator[None]:
    """Re-raise a driver exception as ``translate`` makes of it (None: unchanged, for the runner)."""
    try:
        yield
    except (ProbeError, QueryRejected):
        raise
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


def unverified_tls() -> ssl.SSLContext:
    """A client TLS context that encrypts without verifying the server (see the module docstring)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def format_bytes(size: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def grade_size(size: int, params: DatabaseParams, values: dict[str, float], ok_summary: str) -> Outcome:
    """Grade ``size`` against the quota; adds ``size_bytes`` and ``size_percent`` to ``values``."""
    assert params.size_quota is not None
    percent = 100.0 * size / params.size_quota
    values.update(size_bytes=float(size), size_percent=percent)
    used = f"database size {format_bytes(size)} is {percent:.1f} % of the {format_bytes(params.size_quota)} quota"
    if percent >= params.size_critical_percent:
        return Outcome(Status.CRITICAL, f"{used} (critical at {params.size_critical_percent:g} %)", Reason.THRESHOLD, values)
    if percent >= params.size_warning_percent:
        return Outcome(Status.WARNING, f"{used} (warning at {params.size_warning_percent:g} %)", Reason.THRESHOLD, values)
    return Outcome(Status.OK, f"{ok_summary}; {used}", values=values)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def run_check(call: ProbeCall, params: DatabaseParams, opener: Opener) -> Outcome:
    """Log in, run the query and, with a quota, grade the database size."""
    password = params.password.read() if params.password is not None else ""
    values: dict[str, float] = {}
    start = time.monotonic()
    async with opener(call, params, password) as session:
        values["connect_seconds"] = time.monotonic() - start
        start = time.monotonic()
        try:
            await session.query(params.query)
            values["query_seconds"] = time.monotonic() - start
            size = await session.size_bytes() if params.size_quota is not None else None
        except QueryRejected as exc:
            return Outcome(Status.UNKNOWN, f"query rejected: {exc}", Reason.ERROR, values)
    summary = f"login {_ms(values['connect_seconds'])}, query {_ms(values['query_seconds'])}"
    if size is None:
        return Outcome(Status.OK, summary, values=values)
    return grade_size(size, params, values, summary)
