"""``snmp``: host resources of servers and appliances (firewalls, load balancers) over SNMP,
through the host's ``snmp:`` block and :class:`remediation.snmp.SnmpSession`.

What is read (numeric OIDs; no MIB files are needed):

* **cpu**: HOST-RESOURCES ``hrProcessorLoad`` (``.1.3.6.1.2.1.25.3.3.1.2``), each processor's
  load averaged over the last minute; the check uses the mean over all processors. net-snmp
  has no value for the first minute after it starts: the CPU is then reported as "not sampled
  yet" and not judged. An agent without an ``hrProcessorTable`` is a ``PROTOCOL`` failure
  (set ``cpu: false`` for such a device).
* **memory**: the ``hrStorageTable`` row of type ``hrStorageRam``. Its "used" counts the
  kernel's buffers and page cache, so when the agent also has net-snmp's ``Available memory``
  row, used = size − available (what ``free`` calls available); else, when it has the
  ``Memory buffers`` and ``Cached memory`` rows, those are subtracted; else the RAM row's used.
* **processes**: each name in ``processes`` must appear in ``hrSWRunName``
  (``.1.3.6.1.2.1.25.4.2.1.2``; on Linux the kernel's 15-character process name) or as the
  last part of ``hrSWRunPath``.
* **interfaces**: each name in ``interfaces`` is looked up by ``ifName`` (IF-MIB ifXTable) or
  ``ifDescr``, never by index (indexes change when interfaces come and go), and must have
  ``ifOperStatus`` up(1). A missing interface is a failure too.
* **uptime**: ``hrSystemUptime`` (the host's), else ``sysUpTime`` (the agent's, which also
  restarts with the agent). An uptime shorter than the last run's plus the time since, by more
  than :data:`REBOOT_SLACK`, is an unexpected reboot (the 497-day TimeTicks wrap excepted). A
  reboot is a one-off event, so it stays reported for ``reboot_hold`` (default 1 h) after it
  was noticed: long enough for retries to confirm it. The last uptime is kept in the check's state directory.

Grading: CPU and memory at or above their warning/critical levels, an unexpected reboot
(WARNING), a missing process or an interface not up (CRITICAL). Everything this kind reports
is the device's measured state, so failures carry ``Reason.THRESHOLD``; SNMP failures keep
the SNMP layer's reasons (no answer or wrong v2c community: ``TIMEOUT``; v3 auth: ``AUTH``).
Values: ``cpu_load_percent``, ``memory_used_percent``, ``uptime_seconds``,
``process_count:<name>``, ``interface_up:<name>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from monitord.shared.fields import Duration, Percent, format_duration
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared import kept
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind
from monitord.shared.power import ActionError
from remediation.osprofile import ProcessRow
from remediation.snmp import DEFAULT_RETRIES, DEFAULT_TIMEOUT, Oid, SnmpSession

HR_PROCESSOR_ENTRY: Oid = (1, 3, 6, 1, 2, 1, 25, 3, 3, 1)  # .1 FrwID, .2 Load
HR_STORAGE_ENTRY: Oid = (1, 3, 6, 1, 2, 1, 25, 2, 3, 1)  # .2 Type .3 Descr .4 Units .5 Size .6 Used
HR_STORAGE_RAM: Oid = (1, 3, 6, 1, 2, 1, 25, 2, 1, 2)
HR_SW_RUN_NAME: Oid = (1, 3, 6, 1, 2, 1, 25, 4, 2, 1, 2)
HR_SW_RUN_PATH: Oid = (1, 3, 6, 1, 2, 1, 25, 4, 2, 1, 4)
HR_SW_RUN_PARAMETERS: Oid = (1, 3, 6, 1, 2, 1, 25, 4, 2, 1, 5)
IF_DESCR: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2)
IF_ADMIN_STATUS: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 7)
IF_OPER_STATUS: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)
IF_NAME: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)
HR_SYSTEM_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 25, 1, 1, 0)
SYS_UPTIME: Oid = (1, 3, 6, 1, 2, 1, 1, 3, 0)

TIMETICKS_WRAP = 2**32 / 100
"""Seconds after which a TimeTicks uptime wraps to zero (about 497 days)."""
REBOOT_SLACK = 120.0
"""Seconds an uptime may fall short of the expected one (clocks, sampling) before it is a reboot."""

IF_OPER_STATES = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent", 7: "lowerLayerDown"}


class SnmpHostParams(CheckParams):
    """Which host resources to check, and their thresholds."""

    kind: Literal["snmp"] = "snmp"
    cpu: bool = Field(default=True, description="judge the mean hrProcessorLoad")
    cpu_warning_percent: Percent = 80.0
    cpu_critical_percent: Percent = 95.0
    memory: bool = Field(default=True, description="judge RAM use (hrStorageRam, without buffers and cache)")
    memory_warning_percent: Percent = 90.0
    memory_critical_percent: Percent = 95.0
    processes: list[str] = Field(default_factory=list, description="process names (hrSWRunName) that must run")
    interfaces: list[str] = Field(default_factory=list, description="interfaces (ifName or ifDescr) that must be up")
    reboot: bool = Field(default=True, description="report an unexpected reboot (uptime went back)")
    reboot_hold: Duration = Field(default=3600.0, description="how long a detected reboot stays reported")
    snmp_timeout: Duration = Field(default=DEFAULT_TIMEOUT, description="per SNMP request")
    snmp_retries: int = Field(default=DEFAULT_RETRIES, ge=0, le=5)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "SnmpHostParams":
        for item in ("cpu", "memory"):
            if getattr(self, f"{item}_warning_percent") > getattr(self, f"{item}_critical_percent"):
                raise ValueError(f"{item}_warning_percent must not be more than {item}_critical_percent")
        return self

    def min_timeout(self) -> tuple[float, str]:
        """One SNMP request with its retries must fit."""
        return self.snmp_timeout * (self.snmp_retries + 1), "snmp_timeout × (snmp_retries + 1)"


@dataclass
class Findings:
    """What a run found: the worst status, problems (worst first), OK notes and values."""

    status: Status = Status.OK
    problems: list[tuple[Status, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)

    def problem(self, status: Status, text: str) -> None:
        """Record a problem of ``status``."""
        self.status = max(self.status, status)
        self.problems.append((status, text))

    def graded(self, what: str, percent: float, warning: float, critical: float) -> None:
        """Note ``what`` at ``percent``, a problem at or above a level."""
        text = f"{what} {percent:.0f}%"
        if percent >= critical:
            self.problem(Status.CRITICAL, f"{text} (critical at {critical:g}%)")
        elif percent >= warning:
            self.problem(Status.WARNING, f"{text} (warning at {warning:g}%)")
        else:
            self.notes.append(text)

    def outcome(self) -> Outcome:
        """OK with the notes, or the worst status with the problems, worst first."""
        if self.status is Status.OK:
            return Outcome(Status.OK, ", ".join(self.notes) or "ok", values=self.values)
        ordered = sorted(self.problems, key=lambda p: p[0], reverse=True)
        return Outcome(self.status, "; ".join(text for _, text in ordered), Reason.THRESHOLD, self.values)


def _columns(rows: dict[Oid, Any]) -> dict[int, dict[Oid, Any]]:
    """Split a walked table entry into {column: {row index: value}}."""
    table: dict[int, dict[Oid, Any]] = {}
    for suffix, value in rows.items():
        if suffix:
            table.setdefault(suffix[0], {})[suffix[1:]] = value
    return table


def _text(value: Any) -> str:
    """An OCTET STRING as text."""
    return bytes(value).decode("utf-8", "replace") if hasattr(value, "asOctets") else str(value)


async def _cpu(snmp: SnmpSession, params: SnmpHostParams, found: Findings) -> None:
    table = _columns(await snmp.walk(HR_PROCESSOR_ENTRY))
    if not table:
        raise ProbeError(Reason.PROTOCOL, f"{snmp.label}: no hrProcessorTable (set cpu: false for this device)")
    loads = [int(v) for v in table.get(2, {}).values()]
    if not loads:
        found.notes.append("cpu not sampled yet")
        return
    mean = sum(loads) / len(loads)
    found.values["cpu_load_percent"] = mean
    found.graded("cpu", mean, params.cpu_warning_percent, params.cpu_critical_percent)


def memory_used_percent(table: dict[int, dict[Oid, Any]]) -> float | None:
    """RAM use without buffers and cache (see the module docstring), or None without a RAM row."""
    types, descrs, units = table.get(2, {}), table.get(3, {}), table.get(4, {})
    sizes, used = table.get(5, {}), table.get(6, {})
    ram = next((row for row, kind in types.items() if tuple(kind) == HR_STORAGE_RAM), None)
    if ram is None or not int(sizes.get(ram, 0)):
        return None

    def kib(row: Oid, column: dict[Oid, Any]) -> float:
        return int(column.get(row, 0)) * int(units.get(row, 1)) / 1024

    by_name = {_text(name): row for row, name in descrs.items()}
    total = kib(ram, sizes)
    if "Available memory" in by_name:
        in_use = total - kib(by_name["Available memory"], sizes)
    else:
        in_use = kib(ram, used) - sum(kib(by_name[n], used) for n in ("Memory buffers", "Cached memory") if n in by_name)
    return max(0.0, min(100.0, 100.0 * in_use / total))


async def _memory(snmp: SnmpSession, params: SnmpHostParams, found: Findings) -> None:
    percent = memory_used_percent(_columns(await snmp.walk(HR_STORAGE_ENTRY)))
    if percent is None:
        raise ProbeError(Reason.PROTOCOL, f"{snmp.label}: no hrStorageRam row (set memory: false for this device)")
    found.values["memory_used_percent"] = percent
    found.graded("memory", percent, params.memory_warning_percent, params.memory_critical_percent)


async def sw_run(snmp: SnmpSession) -> list[ProcessRow]:
    """The agent's running processes (hrSWRunName, hrSWRunPath, hrSWRunParameters)."""
    names, paths = await snmp.walk(HR_SW_RUN_NAME), await snmp.walk(HR_SW_RUN_PATH)
    args = await snmp.walk(HR_SW_RUN_PARAMETERS)
    return [ProcessRow(_text(names.get(row, "")), _text(paths.get(row, "")), _text(args.get(row, "")))
            for row in {**names, **paths}]


async def _processes(snmp: SnmpSession, params: SnmpHostParams, found: Findings) -> None:
    rows = await sw_run(snmp)
    running = 0
    for wanted in params.processes:
        count = sum(1 for row in rows if wanted in (row.name, row.executable))
        found.values[f"process_count:{wanted}"] = float(count)
        if count:
            running += 1
        else:
            found.problem(Status.CRITICAL, f"process {wanted} not running")
    if running:
        found.notes.append(f"{running} process{'es' if running != 1 else ''} running")


async def _interfaces(snmp: SnmpSession, params: SnmpHostParams, found: Findings) -> None:
    descrs, names = await snmp.walk(IF_DESCR), await snmp.walk(IF_NAME)
    oper, admin = await snmp.walk(IF_OPER_STATUS), await snmp.walk(IF_ADMIN_STATUS)
    up = 0
    for wanted in params.interfaces:
        rows = [row for row in {**descrs, **names} if wanted in (_text(names.get(row, "")), _text(descrs.get(row, "")))]
        if not rows:
            found.values[f"interface_up:{wanted}"] = 0.0
            found.problem(Status.CRITICAL, f"interface {wanted} not found")
            continue
        states = {int(oper[row]) for row in rows if row in oper}
        is_up = states == {1}
        found.values[f"interface_up:{wanted}"] = float(is_up)
        if is_up:
            up += 1
            continue
        state = ", ".join(IF_OPER_STATES.get(s, str(s)) for s in sorted(states)) or "no status"
        why = " (administratively down)" if any(int(admin.get(row, 1)) == 2 for row in rows) else ""
        found.problem(Status.CRITICAL, f"interface {wanted} is {state}{why}")
    if up:
        found.notes.append(f"{up} interface{'s' if up != 1 else ''} up")


async def _read_uptime(snmp: SnmpSession) -> tuple[float, str]:
    """The host's uptime in seconds (hrSystemUptime), else the agent's (sysUpTime), and which."""
    try:
        return int((await snmp.get(HR_SYSTEM_UPTIME))[0]) / 100, "hrSystemUptime"
    except ActionError as exc:
        if exc.reason is not Reason.PROTOCOL:
            raise
    return int((await snmp.get(SYS_UPTIME))[0]) / 100, "sysUpTime"


def rebooted(previous: dict, uptime: float, now: float) -> bool:
    """Whether ``uptime`` at ``now`` means a reboot since the ``previous`` reading.

    Without a reboot the uptime is the previous one plus the time since (modulo the TimeTicks
    wrap); falling short of that by more than :data:`REBOOT_SLACK` is a reboot.
    """
    if "uptime" not in previous or "at" not in previous:
        return False
    expected = previous["uptime"] + max(0.0, now - previous["at"])
    slack = max(REBOOT_SLACK, 0.01 * (now - previous["at"]))
    if uptime >= expected - slack:
        return False
    wrapped = expected - TIMETICKS_WRAP
    return not (wrapped >= -slack and abs(wrapped - uptime) <= slack)


async def _uptime(snmp: SnmpSession, params: SnmpHostParams, found: Findings, state_path: Path) -> None:
    uptime, source = await _read_uptime(snmp)
    now = time.time()
    found.values["uptime_seconds"] = uptime
    previous = kept.read_json(state_path)
    if previous.get("source") != source:
        previous = {}  # another clock: not comparable
    reboot = {key: previous[key] for key in ("reboot_seen", "uptime_before") if key in previous}
    if rebooted(previous, uptime, now):
        reboot = {"reboot_seen": now, "uptime_before": previous["uptime"] + now - previous["at"]}
    kept.write_json(state_path, {"uptime": uptime, "at": now, "source": source, **reboot})
    if reboot and now - reboot["reboot_seen"] < params.reboot_hold:
        what = "unexpected reboot" if source == "hrSystemUptime" else "unexpected reboot or agent restart"
        found.problem(Status.WARNING, f"{what}: up {_duration(uptime)}, had been up {_duration(reboot['uptime_before'])}")
    else:
        found.notes.append(f"up {_duration(uptime)}")


def _duration(seconds: float) -> str:
    """Whole seconds, as ``3d4h12m5s``."""
    return format_duration(max(1, round(seconds)))


async def run(ctx: ProbeContext, call: ProbeCall, params: SnmpHostParams) -> Outcome:
    """Read the chosen items in turn (agents serve few requests at once) and grade them."""
    found = Findings()
    async with SnmpSession.from_config(call.snmp, call.address, timeout=params.snmp_timeout,
                                       retries=params.snmp_retries) as snmp:
        if params.cpu:
            await _cpu(snmp, params, found)
        if params.memory:
            await _memory(snmp, params, found)
        if params.processes:
            await _processes(snmp, params, found)
        if params.interfaces:
            await _interfaces(snmp, params, found)
        if params.reboot:
            await _uptime(snmp, params, found, ctx.check_dir("snmp", call) / "uptime.json")
    return found.outcome()


KIND = ProbeKind(
    "snmp", SnmpHostParams, run, default_interval=600.0, threshold_notice=True,
    summary="SNMP host resources: CPU, memory, processes, interfaces, unexpected reboots",
    needs=frozenset({"snmp"}),
)
