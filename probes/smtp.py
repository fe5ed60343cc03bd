"""``smtp``: the server greets with 220 and accepts EHLO."""

from __future__ import annotations

import socket
from typing import Literal

from monitord.shared.fields import Port
from monitord.shared.results import Outcome, Status
from probes import tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind


class SmtpParams(CheckParams):
    """SMTP on ``port``; ``helo`` is the name sent with EHLO (default: this machine's name)."""

    kind: Literal["smtp"] = "smtp"
    port: Port = 25
    helo: str | None = None


async def run(ctx: ProbeContext, call: ProbeCall, params: SmtpParams) -> Outcome:
    """Expect 220, send EHLO and expect 250, then QUIT."""
    async with tcp.connect(call.address, params.port) as session:
        _, greeting = await session.read_reply()
        tcp.expect_prefix(greeting[-1], "220", "SMTP server", params.port)
        await session.send_line(f"EHLO {params.helo or socket.getfqdn()}")
        _, ehlo = await session.read_reply()
        tcp.expect_prefix(ehlo[-1], "250", "SMTP EHLO", params.port)
        await session.send_line("QUIT")
        return Outcome(Status.OK, f"SMTP {greeting[0][:80]}", values=session.values())


KIND = ProbeKind("smtp", SmtpParams, run, default_interval=600.0, summary="SMTP server greets with 220 and answers EHLO")
