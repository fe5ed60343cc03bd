"""Run one probe under its timeout and turn whatever happens into a :class:`Result`.

This is the only place where exceptions and timeouts become results.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from typing import Any, Iterable

import aiohttp

from monitord.shared.fields import format_duration
from monitord.shared.redact import redact
from monitord.shared.results import Outcome, ProbeError, Reason, Result, Status
from monitord.config import CheckSpec, Config
from probes import REGISTRY
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind, Runtime
from monitord.shared.power import ActionError

log = logging.getLogger(__name__)

_UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL}
_REFUSED_ERRNOS = {errno.ECONNREFUSED}
_TIMEOUT_ERRNOS = {errno.ETIMEDOUT}
_PROTOCOL_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


def classify(exc: BaseException, call: ProbeCall) -> Outcome:
    """Map an exception raised by a probe to a failed outcome with a typed reason."""
    if isinstance(exc, ProbeError):
        return Outcome(Status.CRITICAL, exc.summary, exc.reason, exc.values)
    if isinstance(exc, ActionError):  # raised by the remediation drivers that probes reuse (SSH, IPMI)
        return Outcome(Status.CRITICAL, exc.summary, exc.reason)
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is the same class on 3.11
        return Outcome(Status.CRITICAL, f"no answer within {format_duration(call.timeout)}", Reason.TIMEOUT)
    if isinstance(exc, (ssl.SSLError, aiohttp.ClientSSLError)):
        return Outcome(Status.CRITICAL, f"TLS error: {_first_line(exc)}", Reason.PROTOCOL)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return classify(exc.os_error, call)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return Outcome(Status.CRITICAL, f"bad HTTP exchange: {_first_line(exc)}", Reason.PROTOCOL)
    if isinstance(exc, (asyncio.IncompleteReadError, EOFError)):
        return Outcome(Status.CRITICAL, "connection closed before the expected answer", Reason.PROTOCOL)
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        code = exc.errno
        if isinstance(exc, ConnectionRefusedError) or code in _REFUSED_ERRNOS:
            return Outcome(Status.CRITICAL, f"connection refused by {call.address}", Reason.REFUSED)
        if code in _UNREACHABLE_ERRNOS:
            return Outcome(Status.CRITICAL, f"{call.address}: {text}", Reason.UNREACHABLE)
        if code in _TIMEOUT_ERRNOS:
            return Outcome(Status.CRITICAL, f"{call.address}: {text}", Reason.TIMEOUT)
        if code in _PROTOCOL_ERRNOS:
            return Outcome(Status.CRITICAL, f"{call.address}: {text}", Reason.PROTOCOL)
        return Outcome(Status.UNKNOWN, f"{call.address}: {text}", Reason.ERROR)
    if isinstance(exc, aiohttp.ClientConnectionError):  # closed or broken connection, no errno
        return Outcome(Status.CRITICAL, f"connection failed: {_first_line(exc)}", Reason.PROTOCOL)
    log.debug("probe raised an unexpected exception", exc_info=exc)
    return Outcome(Status.UNKNOWN, f"probe error: {type(exc).__name__}: {_first_line(exc)}", Reason.ERROR)


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line (summaries are single lines)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


async def run_probe(
    kind: ProbeKind, ctx: ProbeContext, call: ProbeCall, params: CheckParams, now: float
) -> Result:
    """Run ``kind`` for ``call`` within ``call.timeout``; never raises except on cancellation.

    ``now`` is the (possibly fake) wall-clock time the run started, for the record.
    """
    start = time.monotonic()
    try:
        async with asyncio.timeout(call.timeout):
            outcome = await kind.run(ctx, call, params)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - this is the single place exceptions become results
        outcome = classify(exc, call)
    return Result(
        status=outcome.status,
        reason=outcome.reason,
        summary=redact(outcome.summary),
        duration=time.monotonic() - start,
        started_at=now,
        values=dict(outcome.values),
        ticket=outcome.ticket,
    )


async def set_up_kinds(ctx: ProbeContext, config: Config, specs: Iterable[CheckSpec], **services: Any) -> None:
    """Run every registered kind's :attr:`ProbeKind.setup` before ``specs`` run: with the kind's
    section of ``daemon:`` and whether a check among ``specs`` is of that kind; ``services`` are
    the daemon's (:class:`~monitord.shared.probe.Runtime`). A kind may raise to refuse the start (ping
    without permission to send ICMP)."""
    kinds = {spec.kind.name for spec in specs}
    for kind in REGISTRY.values():
        if kind.setup is not None:
            await kind.setup(ctx, Runtime(getattr(config.daemon, kind.name, None), kind.name in kinds, **services))
