"""``pop``: the POP3 server greets with +OK."""

from __future__ import annotations

from typing import Literal

from monitord.fields import Port
from monitord.results import Outcome, Status
from probes import tcp
from probes.base import CheckParams, ProbeCall, ProbeContext, ProbeKind


class PopParams(CheckParams):
    """POP3 on ``port``."""

    kind: Literal["pop"] = "pop"
    port: Port = 110


async def run(ctx: ProbeContext, call: ProbeCall, params: PopParams) -> Outcome:
    """Expect +OK, then QUIT."""
    async with tcp.connect(call.address, params.port) as session:
        line = await session.read_line()
        tcp.expect_prefix(line, "+OK", "POP3 server", params.port)
        await session.send_line("QUIT")
        return Outcome(Status.OK, f"POP3 {line[:80]}", values=session.values())


KIND = ProbeKind("pop", PopParams, run, default_interval=600.0, summary="POP3 server greets with +OK")
