"""``process``: how many processes matching a name or a pattern run, within min/max bounds.

Two transports:

* ``ssh`` (default): the host's process list over its ``ssh:`` block, ``ps`` on Linux and
  ``Get-Process`` on Windows (:mod:`remediation.osprofile`, by the host's ``os:``).
* ``snmp``: HOST-RESOURCES ``hrSWRunTable`` over the host's ``snmp:`` block, read by the same
  code as the ``snmp`` kind's ``processes`` (:func:`probes.snmphost.sw_run`).

``name`` matches a process's short name (Linux ``comm``, 15 characters; Windows
``ProcessName``, case-insensitive, ``.exe`` optional) or its executable's file name.
``pattern`` is a regular expression searched in the whole command line (path and arguments;
Windows PowerShell 5.1's Get-Process has no arguments, only the path). The daemon's own
listing command is never counted: it does not contain the pattern.

Fewer than ``min`` is CRITICAL: the program is down, and a ``restart:`` method (e.g.
``kill_command``/``start_command``) lets the service ladder restart it, verified by
re-probing. More than ``max`` (a runaway fork) is a WARNING with ``Reason.THRESHOLD``:
people decide, nothing is killed. Value: ``process_count``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from monitord.shared.fields import Regex
from monitord.shared.results import Outcome, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind
from remediation.osprofile import PROFILES, Linux, ProcessRow


class ProcessParams(CheckParams):
    """Which processes to count, and the bounds."""

    kind: Literal["process"] = "process"
    name: str | None = Field(default=None, min_length=1, description="process name (comm / ProcessName) or executable")
    pattern: Regex | None = Field(default=None, description="regular expression searched in the command line")
    min: int = Field(default=1, ge=0, description="fewer matching processes: CRITICAL (down)")
    max: int | None = Field(default=None, ge=0, description="more matching processes: WARNING")
    transport: Literal["ssh", "snmp"] = Field(default="ssh", description="ssh: ps / Get-Process; snmp: hrSWRunTable")

    @model_validator(mode="after")
    def _one_matcher(self) -> "ProcessParams":
        if (self.name is None) == (self.pattern is None):
            raise ValueError("give exactly one of name or pattern")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max {self.max} must not be less than min {self.min}")
        return self

    def needs(self) -> frozenset[str]:
        """The host's ``ssh:`` or ``snmp:`` block, by transport."""
        return frozenset({self.transport})

    @property
    def what(self) -> str:
        """How the matched processes are named in summaries."""
        return f"process {self.name}" if self.name is not None else f"processes matching /{self.pattern}/"


def count(rows: list[ProcessRow], params: ProcessParams, profile: Linux) -> int:
    """How many of ``rows`` match ``params``' name or pattern."""
    if params.name is not None:
        return sum(1 for row in rows if profile.same_name(params.name, row.name)
                   or profile.same_name(params.name, row.executable))
    pattern = re.compile(params.pattern)
    return sum(1 for row in rows if pattern.search(row.command) or pattern.search(row.name))


def grade(found: int, params: ProcessParams) -> Outcome:
    """CRITICAL below ``min`` (down), WARNING/THRESHOLD above ``max``, else OK."""
    values = {"process_count": float(found)}
    if found < params.min:
        return Outcome(Status.CRITICAL, f"{params.what}: {found} running, expected at least {params.min}",
                       Reason.ERROR, values)
    if params.max is not None and found > params.max:
        return Outcome(Status.WARNING, f"{params.what}: {found} running, expected at most {params.max}",
                       Reason.THRESHOLD, values)
    return Outcome(Status.OK, f"{params.what}: {found} running", values=values)


async def run(ctx: ProbeContext, call: ProbeCall, params: ProcessParams) -> Outcome:
    """List the host's processes over the chosen transport and count the matching ones."""
    if params.transport == "snmp":
        from probes.snmphost import sw_run
        from remediation.snmp import SnmpSession

        async with SnmpSession.from_config(call.snmp, call.address) as snmp:
            return grade(count(await sw_run(snmp), params, PROFILES["linux"]), params)
    from remediation.ssh import DEFAULT_CONNECT_TIMEOUT, SshClient

    client = SshClient.from_config(call.address, call.ssh, connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, call.timeout),
                                   command_timeout=call.timeout)
    return grade(count(await client.processes(), params, client.profile), params)


KIND = ProbeKind(
    "process", ProcessParams, run, default_interval=600.0,
    summary="processes matching a name or pattern over SSH (ps, Get-Process) or SNMP (hrSWRunTable), min/max",
)
