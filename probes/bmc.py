"""``bmc``: hardware health as the host's BMC reports it over IPMI (the host's ``bmc:`` block).

Each run reads, through :class:`remediation.ipmi.IpmiDriver` (one ipmitool process per read):

* the sensors: a reading past its non-critical threshold is a WARNING, past a critical or
  non-recoverable one CRITICAL (``Reason.THRESHOLD``);
* the System Event Log records that arrived since the last run. Each is judged by the first
  :class:`SelRule` whose sensor and event patterns match it; the defaults cover power
  supplies, fans, temperatures and drive slots. Records no rule matches are counted only.

A failed drive or RAID member is not a reason to reset anything: it is a part to replace in
business hours. Rules marked ``hardware_ticket`` (the drive-slot default) make the result say
so: its summary starts with :data:`TICKET_PREFIX` and its ticket is ``Ticket.HARDWARE``.
The check is never ``host_critical`` by default.

The last SEL record seen (id and text) is kept in the check's state directory, so each record
is reported once, also across daemon restarts. The first run only notes where the log stands:
records older than the monitoring are history, not news. A record that cannot be found again
(the SEL was cleared, or more than ``sel_window`` records came in between) makes every
record read count as new.

Because a SEL record is reported by one run only, ``max_attempts`` defaults to 1 for this
kind: a soft state that needs three failing runs would never confirm a one-off event.
IPMI failures keep the driver's typed reasons (a wrong password is ``AUTH``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from monitord.shared.fields import Regex, StrictModel
from monitord.shared.results import Outcome, Reason, Status, Ticket
from monitord.shared import kept
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind
from remediation.ipmi import IpmiDriver, SelEntry, SensorReading, SensorStatus

TICKET_PREFIX = "hardware ticket (business hours): "
_CRITICAL = r"(?<!non-)critical|non-recoverable"
_SEVERITY_ORDER = (SensorStatus.NR, SensorStatus.CR, SensorStatus.NC)


class SelRule(StrictModel):
    """Which SEL records matter: patterns (case-insensitive) on the sensor column (``Drive Slot /
    Bay #0x05``) and the event text (``Drive Fault``) as ipmitool prints them. Only asserted
    records are judged; a deassertion is a recovery."""

    sensor: Regex
    event: Regex = ""
    severity: Literal["warning", "critical"] = "critical"
    hardware_ticket: bool = Field(default=False, description="a part to replace in business hours, not a reset")

    def matches(self, entry: SelEntry) -> bool:
        """True if ``entry`` is an asserted record of this rule's sensor and event."""
        return (
            entry.direction != "Deasserted"
            and re.search(self.sensor, entry.sensor, re.IGNORECASE) is not None
            and re.search(self.event, entry.event, re.IGNORECASE) is not None
        )


DEFAULT_SEL_RULES: tuple[SelRule, ...] = (
    SelRule(sensor=r"^Power Supply", event=r"fail|lost|out-of-range|config(uration)? error|predictive"),
    SelRule(sensor=r"^Fan", event=rf"{_CRITICAL}|redundancy (lost|degraded)|removed|absent|fail"),
    SelRule(sensor=r"^Temperature", event=_CRITICAL),
    SelRule(
        sensor=r"^Drive Slot",
        event=r"fault|predictive failure|in (critical|failed) array|rebuild aborted",
        severity="warning",
        hardware_ticket=True,
    ),
)
"""PSU, fan, temperature and drive-slot faults; a drive fault is a business-hours ticket."""


class BmcParams(CheckParams):
    """Sensors against their thresholds and new critical SEL records."""

    kind: Literal["bmc"] = "bmc"
    max_attempts: int | None = Field(default=1, ge=1, le=100)
    sensors: bool = Field(default=True, description="judge sensor readings against their thresholds")
    ignore_sensors: list[Regex] = Field(default_factory=list, description="patterns of sensor names not judged")
    sel: bool = Field(default=True, description="report new SEL records that a rule matches")
    sel_rules: list[SelRule] = Field(
        default_factory=lambda: list(DEFAULT_SEL_RULES), description="replace the default rules"
    )
    extra_sel_rules: list[SelRule] = Field(default_factory=list, description="rules checked before sel_rules")
    sel_window: int = Field(default=100, ge=1, le=1000, description="SEL records read per run (the newest)")

    def rules(self) -> list[SelRule]:
        """The rules in the order they are tried."""
        return self.extra_sel_rules + self.sel_rules


def _key(entry: SelEntry) -> str:
    """What identifies a record besides its id (ids restart when the SEL is cleared)."""
    return f"{entry.timestamp}|{entry.sensor}|{entry.event}|{entry.direction}"


def new_entries(entries: list[SelEntry], kept_state: dict) -> tuple[list[SelEntry], bool]:
    """The records after the one remembered in ``kept_state``, and whether there was one.

    No remembered record: none are new (the first run). The remembered record gone: all are.
    """
    if "last_id" not in kept_state:
        return [], False
    for position, entry in enumerate(entries):
        if entry.id == kept_state["last_id"] and _key(entry) == kept_state.get("last_key"):
            return entries[position + 1:], True
    return entries, True


def _sensor_problems(readings: list[SensorReading], ignore: list[str]) -> list[SensorReading]:
    return [
        r for r in readings
        if r.status.problem and not any(re.search(p, r.name, re.IGNORECASE) for p in ignore)
    ]


def _sensor_status(problems: list[SensorReading]) -> Status:
    if any(p.status in (SensorStatus.CR, SensorStatus.NR) for p in problems):
        return Status.CRITICAL
    return Status.WARNING if problems else Status.OK


async def run(ctx: ProbeContext, call: ProbeCall, params: BmcParams) -> Outcome:
    """Read sensors and the SEL; grade what is wrong."""
    driver = IpmiDriver.from_config(call.bmc, timeout=call.timeout)
    parts: list[str] = []
    status = Status.OK
    values: dict[str, float] = {}
    ticket = False
    incomplete: str | None = None  # what ipmitool complained of while listing sensors (it exits 0)

    if params.sensors:
        readings, incomplete = await driver.sensor_report()
        problems = _sensor_problems(readings, params.ignore_sensors)
        status = max(status, _sensor_status(problems))
        values.update(sensors=float(len(readings)), sensor_problems=float(len(problems)))
        if problems:
            ordered = sorted(problems, key=lambda p: _SEVERITY_ORDER.index(p.status))
            parts.append("sensors: " + ", ".join(f"{p.describe()} ({p.status})" for p in ordered))
        if incomplete:
            parts.append(f"sensors incomplete (ipmitool: {incomplete})")

    if params.sel:
        path = ctx.check_dir("bmc", call) / "sel.json"
        state = kept.read_json(path)
        entries = await driver.sel(params.sel_window)
        fresh, had_state = new_entries(entries, state)
        rules = params.rules()
        judged = [(entry, next((r for r in rules if r.matches(entry)), None)) for entry in fresh]
        bad = [(entry, rule) for entry, rule in judged if rule is not None]
        for entry, rule in bad:
            status = max(status, Status.CRITICAL if rule.severity == "critical" else Status.WARNING)
        ticket = any(rule.hardware_ticket for _, rule in bad)
        values.update(sel_new=float(len(fresh)), sel_critical=float(len(bad)))
        if bad:
            described = "; ".join(f"#{entry.id} {entry.describe()}" for entry, _ in bad[:5])
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            parts.append(f"{len(bad)} new SEL record{'s' if len(bad) != 1 else ''}: {described}{more}")
        elif not had_state:
            parts.append(f"SEL baseline taken ({len(entries)} records on file)")
        elif fresh:
            parts.append(f"{len(fresh)} new SEL record{'s' if len(fresh) != 1 else ''}, none of concern")
        # after an empty SEL, every later record is new
        kept.write_json(path, {"last_id": entries[-1].id, "last_key": _key(entries[-1])} if entries
                        else {"last_id": None, "last_key": None})

    if status is Status.OK and incomplete:
        # some sensors could not be read: nobody can say they are ok (people look; no customer notice)
        return Outcome(Status.UNKNOWN, "; ".join(parts), Reason.PROTOCOL, values)
    if status is Status.OK:
        return Outcome(Status.OK, "; ".join((["sensors ok"] if params.sensors else []) + parts) or "ok", values=values)
    return Outcome(status, (TICKET_PREFIX if ticket else "") + "; ".join(parts), Reason.THRESHOLD, values,
                   Ticket.HARDWARE if ticket else None)


KIND = ProbeKind(
    "bmc", BmcParams, run, default_interval=600.0, threshold_notice=True,
    summary="BMC sensors within thresholds; no new critical SEL records (drive faults: hardware ticket)",
    needs=frozenset({"bmc"}),
)
