"""The runner: the one place where exceptions and timeouts become typed results."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Literal

import pytest

from monitord.shared.results import Outcome, ProbeError, Reason, Result, Status, Ticket
from monitord.run.runner import run_probe
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind


class P(CheckParams):
    kind: Literal["t"] = "t"


def kind_raising(exc: BaseException | None = None, hang: bool = False) -> ProbeKind:
    async def run(ctx, call, params):
        if hang:
            await asyncio.Event().wait()
        if exc is not None:
            raise exc
        return Outcome(Status.WARNING, "slow", Reason.THRESHOLD, {"ms": 12.5})

    return ProbeKind("t", P, run, 60.0, "test")


CALL = ProbeCall("h", "192.0.2.1", 0.05)


@pytest.mark.parametrize("exc,status,reason", [
    (ProbeError(Reason.AUTH, "bad password"), Status.CRITICAL, Reason.AUTH),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Status.CRITICAL, Reason.REFUSED),
    (OSError(errno.EHOSTUNREACH, "No route to host"), Status.CRITICAL, Reason.UNREACHABLE),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), Status.CRITICAL, Reason.UNREACHABLE),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), Status.CRITICAL, Reason.TIMEOUT),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Status.CRITICAL, Reason.PROTOCOL),
    (asyncio.IncompleteReadError(b"", 10), Status.CRITICAL, Reason.PROTOCOL),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Status.UNKNOWN, Reason.ERROR),
    (ValueError("bug in a probe"), Status.UNKNOWN, Reason.ERROR),
])
async def test_exceptions_map_to_typed_reasons(exc, status, reason):
    result = await run_probe(kind_raising(exc), ProbeContext(), CALL, P(), 1000.0)
    assert (result.status, result.reason) == (status, reason)
    assert result.summary and result.started_at == 1000.0


async def test_outcome_passes_through_with_values():
    result = await run_probe(kind_raising(), ProbeContext(), CALL, P(), 5.0)
    assert (result.status, result.reason, result.summary, dict(result.values)) == (
        Status.WARNING, Reason.THRESHOLD, "slow", {"ms": 12.5})


async def test_a_ticket_passes_through_as_a_field_and_survives_the_store():
    async def run(ctx, call, params):
        return Outcome(Status.CRITICAL, "drive fault", Reason.THRESHOLD, {"sel_new": 1.0}, Ticket.HARDWARE)

    result = await run_probe(ProbeKind("t", P, run, 60.0, "test"), ProbeContext(), CALL, P(), 5.0)
    assert result.ticket is Ticket.HARDWARE and dict(result.values) == {"sel_new": 1.0}  # never a measured value
    assert Result.from_dict(result.to_dict()).ticket is Ticket.HARDWARE  # kept with the check's state
    plain = await run_probe(kind_raising(), ProbeContext(), CALL, P(), 5.0)
    assert plain.ticket is None and "ticket" not in plain.to_dict() and Result.from_dict(plain.to_dict()).ticket is None


async def test_hung_probe_times_out_and_leaves_no_task():
    result = await run_probe(kind_raising(hang=True), ProbeContext(), CALL, P(), 5.0)
    assert (result.status, result.reason, result.summary) == (Status.CRITICAL, Reason.TIMEOUT, "no answer within 50ms")
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_cancellation_is_never_swallowed():
    task = asyncio.create_task(run_probe(kind_raising(hang=True), ProbeContext(), ProbeCall("h", "x", 60), P(), 5.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_shared_resource_created_once_even_when_first_caller_times_out():
    created = []

    async def factory(ctx):
        created.append(1)
        await asyncio.sleep(0.01)
        return object()

    ctx = ProbeContext()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.001):
            await ctx.resource("x", factory)
    first, second = await asyncio.gather(ctx.resource("x", factory), ctx.resource("x", factory))
    assert first is second and created == [1]
    assert await ctx.resource("x", factory) is first and created == [1]  # made: handed out as it is
    await ctx.aclose()
