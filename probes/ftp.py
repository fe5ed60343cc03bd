"""``ftp``: the server greets with 220."""

from __future__ import annotations

from typing import Literal

from monitord.shared.fields import Port
from monitord.shared.results import Outcome, Status
from probes import tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind


class FtpParams(CheckParams):
    """FTP control connection on ``port``."""

    kind: Literal["ftp"] = "ftp"
    port: Port = 21


async def run(ctx: ProbeContext, call: ProbeCall, params: FtpParams) -> Outcome:
    """Expect a 220 greeting, then QUIT."""
    async with tcp.connect(call.address, params.port) as session:
        code, lines = await session.read_reply()
        tcp.expect_prefix(lines[-1], "220", "FTP server", params.port)
        await session.send_line("QUIT")
        return Outcome(Status.OK, f"FTP {lines[-1][:80]}", values=session.values())


KIND = ProbeKind("ftp", FtpParams, run, default_interval=600.0, summary="FTP server greets with 220")
