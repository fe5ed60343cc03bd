"""``pop``: the POP3 server greets with +OK."""

from __future__ import annotations

from typing import Literal

from monitord.shared.fields import Port
from monitord.shared.results import Outcome
from probes import tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind


class PopParams(CheckParams):
    """POP3 on ``port``."""

    kind: Literal["pop"] = "pop"
    port: Port = 110


async def run(ctx: ProbeContext, call: ProbeCall, params: PopParams) -> Outcome:
    """Expect +OK, then QUIT."""
    return await tcp.greeting(call, params.port, "+OK", "POP3 server", farewell="QUIT")


KIND = ProbeKind("pop", PopParams, run, default_interval=600.0, summary="POP3 server greets with +OK")
