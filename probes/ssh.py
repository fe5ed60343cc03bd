"""``ssh``: the server sends an SSH- identification banner."""

from __future__ import annotations

from typing import Literal

from monitord.shared.fields import Port
from monitord.shared.results import Outcome
from probes import tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind


class SshParams(CheckParams):
    """SSH on ``port``. Only the banner is read; logins are the remediation layer's."""

    kind: Literal["ssh"] = "ssh"
    port: Port = 22


async def run(ctx: ProbeContext, call: ProbeCall, params: SshParams) -> Outcome:
    """Expect an ``SSH-`` identification line."""
    return await tcp.greeting(call, params.port, "SSH-", "SSH server", farewell=None)


KIND = ProbeKind("ssh", SshParams, run, default_interval=600.0, summary="SSH server sends its banner")
