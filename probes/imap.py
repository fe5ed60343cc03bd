"""``imap``: the IMAP server greets with * OK."""

from __future__ import annotations

from typing import Literal

from monitord.fields import Port
from monitord.results import Outcome, Status
from probes import tcp
from probes.base import CheckParams, ProbeCall, ProbeContext, ProbeKind


class ImapParams(CheckParams):
    """IMAP on ``port``."""

    kind: Literal["imap"] = "imap"
    port: Port = 143


async def run(ctx: ProbeContext, call: ProbeCall, params: ImapParams) -> Outcome:
    """Expect ``* OK``, then LOGOUT."""
    async with tcp.connect(call.address, params.port) as session:
        line = await session.read_line()
        tcp.expect_prefix(line, "* OK", "IMAP server", params.port)
        await session.send_line("a1 LOGOUT")
        return Outcome(Status.OK, f"IMAP {line[:80]}", values=session.values())


KIND = ProbeKind("imap", ImapParams, run, default_interval=600.0, summary="IMAP server greets with * OK")
