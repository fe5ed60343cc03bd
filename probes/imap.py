"""``imap``: the IMAP server greets with * OK."""

from __future__ import annotations

from typing import Literal

from monitord.shared.fields import Port
from monitord.shared.results import Outcome
from probes import tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind


class ImapParams(CheckParams):
    """IMAP on ``port``."""

    kind: Literal["imap"] = "imap"
    port: Port = 143


async def run(ctx: ProbeContext, call: ProbeCall, params: ImapParams) -> Outcome:
    """Expect ``* OK``, then LOGOUT."""
    return await tcp.greeting(call, params.port, "* OK", "IMAP server", farewell="a1 LOGOUT")


KIND = ProbeKind("imap", ImapParams, run, default_interval=600.0, summary="IMAP server greets with * OK")
