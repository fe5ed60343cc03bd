"""Power control and health of a host through its BMC (IPMI 2.0 lanplus), by running ipmitool.

Why ipmitool as a subprocess and not pyghmi: pyghmi is blocking (it would need a thread per
call) and, as seen in ``/work/shared/peers.md`` §1, constructing a second ``Command`` to a BMC
that already had a logged-in session hung forever in its session wait loop. A hung power
driver cannot be cancelled from asyncio; a subprocess can. ipmitool is also what fence_ipmilan
runs. Each call is one ipmitool process: its own process group, killed as a whole on timeout,
always reaped.

The password never appears on argv (other local users can read ``/proc/PID/cmdline``) nor in
logs: ipmitool reads it from ``IPMI_PASSWORD`` in its environment (``-E``).

This driver sends single commands (status, on, off, reset); checking, waiting, verifying and
retrying live in :func:`monitord.shared.power.power_change`.

**A power command is sent at most once.** ipmitool retransmits an IPMI request whose answer
is late (``-R`` tries, ``-N`` seconds growing by one per try); a BMC is allowed, not required,
to spot the duplicate. Seen against ipmi_sim: a BMC that took 3 s to answer ``chassis power
reset`` reset the machine twice under ``-N 1 -R 3``, although ipmitool printed one success.
Commands therefore run with ``-R 1`` and get the whole wait a read would get over all its
tries (:meth:`IpmiDriver.argv`); an answer later than that is a ``TIMEOUT`` whose summary says
the command may have been carried out (it was, in that test). Reads use ``-R retries``.

Failures are :class:`~monitord.shared.power.ActionError` with a typed reason. ipmitool prints the
same last line, ``Error: Unable to establish IPMI v2 / RMCP+ session``, for a wrong password
and for a BMC that does not answer; only its verbose output (``-v``) tells them apart
(texts seen with ipmitool 1.8.19 against ipmi_sim 1.0.13):

* ``RAKP 2 HMAC is invalid`` (wrong password), ``RAKP 2 message indicates an error :
  unauthorized name`` (unknown user), ``Insufficient privilege level``: ``AUTH``.
* ``Get Auth Capabilities error`` / ``Error issuing Get Channel Authentication Capabilities
  request`` (nothing answered), ``Unable to get Chassis Power Status`` / ``Unable to set
  Chassis Power Control`` (no answer inside a session), the process outliving its timeout:
  ``TIMEOUT``.
* ``Address lookup for HOST failed``, ``Could not open socket``: ``UNREACHABLE``.
* ``invalid authentication algorithm`` and other cipher-suite mismatches (e.g. ``-C 17`` on a
  BMC without SHA-256), output that does not parse: ``PROTOCOL``.
* anything else, e.g. the BMC refusing a command with a completion code: ``ERROR``.

Chassis commands always run with ``-v`` (it does not change their output). ``-v`` changes the
output of ``sel`` and ``sensor``, so those run without it; when one of them fails with only
the ambiguous session error, the driver asks ``chassis power status -v`` why (a read).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import os
import re
import signal
from dataclasses import dataclass, field
from typing import Sequence

from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState
from monitord.shared.access import BmcConfig


log = logging.getLogger(__name__)

IPMITOOL = "ipmitool"
DEFAULT_TIMEOUT = 20.0  # seconds for one ipmitool process, then it is killed
DEFAULT_IPMI_TIMEOUT = 2  # ipmitool -N: seconds for the first try of one request
DEFAULT_RETRIES = 2  # ipmitool -R: tries of one read request (1 = no retransmission)

PRIVILEGES = {"administrator": "ADMINISTRATOR", "operator": "OPERATOR"}

_COMMAND_WORDS = {PowerAction.ON: "on", PowerAction.OFF: "off", PowerAction.RESET: "reset"}
_COMMAND_CONFIRMATIONS = {
    PowerAction.ON: "Chassis Power Control: Up/On",
    PowerAction.OFF: "Chassis Power Control: Down/Off",
    PowerAction.RESET: "Chassis Power Control: Reset",
}
_POWER_STATUS = re.compile(r"^Chassis Power is (on|off)$", re.MULTILINE)

# (reason, regex on ipmitool's stderr), first match wins. Order matters: an auth failure
# also ends with the generic session error.
_FAILURES: tuple[tuple[Reason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        (Reason.AUTH, r"RAKP \d HMAC is invalid"),
        # RAKP status texts (IPMI 2.0 table 13-15 as ipmitool words them)
        (Reason.AUTH, r"unauthorized (name|role)|invalid (role|name length|integrity check value)"),
        (Reason.AUTH, r"Insufficient privilege level"),
        (Reason.PROTOCOL, r"invalid (authentication|integrity|confidentiality) algorithm"),
        (Reason.PROTOCOL, r"no matching \w+ payload|no cipher suite match|(invalid|unsupported) cipher suite"),
        (Reason.UNREACHABLE, r"Address lookup for .* failed|Could not open socket"),
        (Reason.TIMEOUT, r"Get Auth Capabilities error|Error issuing Get Channel Authentication Capabilities"),
        (Reason.TIMEOUT, r"^Unable to (get|set) Chassis Power|No response from remote controller"),
    )
)
_SESSION_FAILED = "Unable to establish IPMI v2 / RMCP+ session"
_MAY_HAVE_ACTED = "the command may have reached the BMC"

# Lines ipmitool -v prints on every run; left out of failure summaries.
_NOISE = re.compile(
    r"^(Loading IANA PEN Registry|Running Get VSO Capabilities|Invalid completion code received: Invalid command"
    r"|Discovered IPMB address|Get HPM\.x Capabilities request failed|SEL has no entries|IPMI Request Match NOT FOUND)"
)


def classify_failure(stderr: str) -> Reason | None:
    """The reason an ipmitool run failed, from its stderr; None when the text does not say
    (the bare session error, which is printed for a wrong password and a silent BMC alike)."""
    for reason, pattern in _FAILURES:
        if any(pattern.search(line) for line in stderr.splitlines()):
            return reason
    return None


_COMPLAINT = re.compile(r"^(Err\b|Error\b|Unable to)|\bcommand failed\b", re.IGNORECASE)


def complaints(output: str) -> str | None:
    """The error lines ipmitool printed although it exited 0 (e.g. ``Err in cmd get sensor sdr
    info`` for a sensor it could not read), on one line; None when there are none. Table rows
    (``|``-separated) are never complaints."""
    lines = [line.strip() for line in output.splitlines() if "|" not in line]
    hit = [line for line in lines if _COMPLAINT.search(line) and not _NOISE.match(line)]
    return _failure_detail("\n".join(hit)) if hit else None


def _failure_detail(stderr: str, limit: int = 300) -> str:
    """The informative lines of ipmitool's stderr, on one line."""
    lines = [line.strip().lstrip("> ").strip() for line in stderr.splitlines()]
    kept = list(dict.fromkeys(line for line in lines if line and not _NOISE.match(line)))
    text = "; ".join(kept) or "no error message"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- health records


@dataclass(frozen=True, slots=True)
class SelEntry:
    """One System Event Log record as ``ipmitool sel elist`` prints it."""

    id: int
    timestamp: str  # as printed: "05/14/2024 10:22:01", or "Pre-Init 0000002117" before the BMC clock was set
    sensor: str  # "Temperature Temp", "Memory #0x05"
    event: str  # "Upper Critical going high"
    direction: str  # "Asserted", "Deasserted", or "" for OEM records
    detail: str = ""  # further columns, e.g. "Reading 149 > Threshold 144 degrees C"

    @property
    def when(self) -> datetime.datetime | None:
        """The timestamp as a naive datetime in the BMC's clock, if it is a date."""
        try:
            return datetime.datetime.strptime(self.timestamp, "%m/%d/%Y %H:%M:%S")
        except ValueError:
            return None

    def describe(self) -> str:
        """A one-line description for the journal."""
        text = f"{self.sensor}: {self.event}"
        return f"{text} ({self.direction})" if self.direction else text


class SensorStatus(enum.StrEnum):
    """A sensor's state as ``ipmitool sensor`` prints it."""

    OK = "ok"
    NC = "nc"  # non-critical threshold crossed
    CR = "cr"  # critical threshold crossed
    NR = "nr"  # non-recoverable threshold crossed
    NA = "na"  # no reading, or a discrete sensor (its state bits are not judged here; see the SEL)

    @property
    def problem(self) -> bool:
        """True for a crossed threshold."""
        return self in (SensorStatus.NC, SensorStatus.CR, SensorStatus.NR)


_STATUS_WORDS = {"nr": "non-recoverable", "cr": "critical", "nc": "non-critical"}
_UNIT_ABBREVIATIONS = {"degrees C": "C", "degrees F": "F", "percent": "%"}
THRESHOLD_NAMES = ("lnr", "lcr", "lnc", "unc", "ucr", "unr")


@dataclass(frozen=True, slots=True)
class SensorReading:
    """One sensor as ``ipmitool sensor`` prints it."""

    name: str
    value: float | None  # None when there is no reading, or for discrete sensors
    unit: str  # "degrees C", "RPM", "Volts", "discrete"
    status: SensorStatus
    thresholds: dict[str, float] = field(default_factory=dict)  # keys from THRESHOLD_NAMES

    def describe(self) -> str:
        """``Temp 149 C``."""
        if self.value is None:
            return f"{self.name} no reading"
        return f"{self.name} {self.value:g} {_UNIT_ABBREVIATIONS.get(self.unit, self.unit)}".rstrip()


@dataclass(frozen=True, slots=True)
class BmcHealth:
    """What the BMC says about the machine: power, the latest SEL records, the sensors not ok.

    ``sel`` or ``problems`` is None when it could not be read (the reason is in ``errors``);
    the power state is always there, or :meth:`IpmiDriver.health` raised.
    """

    power: PowerState
    sel: tuple[SelEntry, ...] | None
    problems: tuple[SensorReading, ...] | None
    sel_requested: int = 20
    errors: tuple[str, ...] = ()
    sensors_complete: bool = True  # False when ipmitool complained while listing them

    def _sel_part(self) -> str | None:
        if self.sel is None:
            return None
        if not self.sel:
            return "SEL empty"
        count = len(self.sel)
        shown = f"{count}+" if count >= self.sel_requested else str(count)
        return f"{shown} SEL event{'' if count == 1 else 's'} (last: {self.sel[-1].describe()})"

    def _sensor_part(self) -> str | None:
        if self.problems is None:
            return None
        groups = []
        for status in (SensorStatus.NR, SensorStatus.CR, SensorStatus.NC):
            hit = [sensor.describe() for sensor in self.problems if sensor.status is status]
            if hit:
                groups.append(f"{len(hit)} {_STATUS_WORDS[status]} ({', '.join(hit)})")
        if groups:
            return "sensors: " + ", ".join(groups)
        return "sensors ok" if self.sensors_complete else None

    def summary(self) -> str:
        """One line for the journal: ``power on; 2 SEL events (last: ...); sensors: 1 critical (Temp 149 C)``."""
        parts = [f"power {self.power}", self._sel_part(), self._sensor_part(), *self.errors]
        return "; ".join(part for part in parts if part)


# --------------------------------------------------------------------------- parsers


def _protocol_error(what: str, line: str) -> ActionError:
    return ActionError(Reason.PROTOCOL, f"ipmitool {what}: cannot parse {line.strip()[:120]!r}")


def _table_rows(output: str) -> list[list[str]]:
    """The ``|``-separated rows of ipmitool's table output, fields stripped; other lines skipped."""
    return [[cell.strip() for cell in line.split("|")] for line in output.splitlines() if "|" in line]


def parse_power_status(output: str) -> PowerState:
    """``Chassis Power is on`` → :attr:`PowerState.ON`; anything else is a PROTOCOL error."""
    match = _POWER_STATUS.search(output)
    if match is None:
        raise _protocol_error("chassis power status", output or "(no output)")
    return PowerState(match.group(1))


def parse_sel(output: str) -> list[SelEntry]:
    """Parse ``ipmitool sel elist`` (or ``sel list``) output, oldest first."""
    entries = []
    for row in _table_rows(output):
        if len(row) < 4:
            raise _protocol_error("sel elist", " | ".join(row))
        try:
            record_id = int(row[0], 16)  # ipmitool prints record ids in hex
        except ValueError:
            raise _protocol_error("sel elist", " | ".join(row)) from None
        rest = row[4:] + ["", ""]
        entries.append(
            SelEntry(record_id, f"{row[1]} {row[2]}", row[3], rest[0], rest[1], " | ".join(f for f in row[6:] if f))
        )
    return entries


def _number(text: str, what: str, line: str) -> float | None:
    """A sensor number column: ``na`` → None, hex (discrete readings) → None, else a float."""
    if text.lower() in ("na", "") or text.lower().startswith("0x"):
        return None
    try:
        return float(text)
    except ValueError:
        raise _protocol_error(what, line) from None


def _sensor_status(text: str, line: str) -> SensorStatus:
    """``ok``/``nc``/``cr``/``nr``; ``na``, ``ns`` (no reading) and hex discrete states → NA."""
    lowered = text.lower()
    if lowered in ("na", "ns") or lowered.startswith("0x"):
        return SensorStatus.NA
    try:
        return SensorStatus(lowered)
    except ValueError:
        raise _protocol_error("sensor", line) from None


def parse_sensors(output: str) -> list[SensorReading]:
    """Parse ``ipmitool sensor`` output: name | value | unit | status | lnr | lcr | lnc | unc | ucr | unr."""
    readings = []
    for row in _table_rows(output):
        line = " | ".join(row)
        if len(row) < 4:
            raise _protocol_error("sensor", line)
        thresholds = {}
        for name, text in zip(THRESHOLD_NAMES, row[4:10]):
            value = _number(text, "sensor", line)
            if value is not None:
                thresholds[name] = value
        readings.append(
            SensorReading(row[0], _number(row[1], "sensor", line), row[2], _sensor_status(row[3], line), thresholds)
        )
    return readings


def parse_sensor_report(stdout: str, stderr: str) -> tuple[list[SensorReading], str | None]:
    """``ipmitool sensor``'s readings, and its complaints from both streams: a sensor without an
    SDR record prints ``Err in cmd get sensor sdr info`` on stdout, among the rows, and ``Get SDR
    0000 command failed: ...`` on stderr, and ipmitool still exits 0."""
    return parse_sensors(stdout), complaints(stdout + "\n" + stderr)


# --------------------------------------------------------------------------- the driver


class IpmiDriver:
    """One host's BMC, driven by one ipmitool process per call (see the module docstring)."""

    name = "ipmi"

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: str,
        cipher_suite: int = 3,
        privilege: str = "administrator",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        ipmi_timeout: int = DEFAULT_IPMI_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        ipmitool: str = IPMITOOL,
    ) -> None:
        """``timeout`` bounds one ipmitool process; ``ipmi_timeout`` (``-N``, whole seconds) and
        ``retries`` (``-R``, tries per read request, at least 1) bound ipmitool's own waiting.
        With no BMC answering, a read gives up after about ``2 * sum(ipmi_timeout + i for i in
        range(retries))`` seconds (10 s with the defaults)."""
        if privilege not in PRIVILEGES:
            raise ValueError(f"privilege must be one of {', '.join(PRIVILEGES)}, not {privilege!r}")
        if ipmi_timeout < 1 or retries < 1:
            raise ValueError("ipmi_timeout and retries must be at least 1 (0 means ipmitool's defaults)")
        self.address = address
        self.port = port
        self.username = username
        self._password = password
        self.cipher_suite = cipher_suite
        self.privilege = privilege
        self.timeout = timeout
        self.ipmi_timeout = ipmi_timeout
        self.retries = retries
        self.ipmitool = ipmitool

    def __repr__(self) -> str:
        return f"IpmiDriver({self.username}@{self.address}:{self.port}, cipher {self.cipher_suite}, {self.privilege})"

    @classmethod
    def from_config(cls, bmc: BmcConfig, timeout: float = DEFAULT_TIMEOUT) -> "IpmiDriver":
        """Build a driver from a host's ``bmc`` config, reading the password now.

        A password that cannot be read is ``ActionError(Reason.ERROR)``, not ``AUTH``: nothing
        was sent, the BMC did not reject anything; the fault is in this machine's config or
        secret store, and the journal should not blame the BMC or the password's value.
        """
        try:
            password = bmc.password.read()
        except LookupError as exc:
            raise ActionError(Reason.ERROR, f"BMC {bmc.address}: password unavailable: {exc}") from None
        return cls(bmc.address, bmc.port, bmc.username, password, bmc.cipher_suite, bmc.privilege, timeout)

    def argv(self, command: Sequence[str], *, verbose: bool = False, once: bool = False) -> list[str]:
        """The ipmitool argv for ``command`` (pure; the password is never part of it).

        ``once`` sends the request a single time (``-R 1``) with the whole wait that ``retries``
        tries would have had, for commands that must not be retransmitted.
        """
        if once:
            tries, wait = 1, sum(self.ipmi_timeout + i for i in range(self.retries))
        else:
            tries, wait = self.retries, self.ipmi_timeout
        argv = [
            self.ipmitool, "-I", "lanplus", "-H", self.address, "-p", str(self.port),
            "-U", self.username, "-E", "-C", str(self.cipher_suite), "-L", PRIVILEGES[self.privilege],
            "-N", str(wait), "-R", str(tries),
        ]
        if verbose:
            argv.append("-v")
        return argv + list(command)

    def _env(self) -> dict[str, str]:
        """A minimal environment carrying the password for ``-E``."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "IPMI_PASSWORD": self._password}

    async def _run(self, command: Sequence[str], *, verbose: bool = False, once: bool = False) -> str:
        """Run ipmitool once and return its stdout; raise :class:`ActionError` on failure."""
        return (await self._run_full(command, verbose=verbose, once=once))[0]

    async def _run_full(self, command: Sequence[str], *, verbose: bool = False,
                        once: bool = False) -> tuple[str, str]:
        """Run ipmitool once and return its stdout and stderr; raise :class:`ActionError` on failure.

        The process gets its own process group, which is SIGKILLed on timeout or cancellation;
        the process is always waited for.
        """
        what = " ".join(command)
        argv = self.argv(command, verbose=verbose, once=once)
        log.debug("%s: %s", self.address, " ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._env(), start_new_session=True,
            )
        except OSError as exc:
            raise ActionError(Reason.ERROR, f"cannot run {self.ipmitool}: {exc.strerror}") from None
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            sent = f"; {_MAY_HAVE_ACTED}" if once else ""
            raise ActionError(
                Reason.TIMEOUT, f"ipmitool {what}: no result after {self.timeout:g}s, killed{sent}"
            ) from None
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()
        out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise await self._failure(what, err, verbose, once)
        return out, err

    async def _failure(self, what: str, stderr: str, verbose: bool, once: bool) -> ActionError:
        """The :class:`ActionError` for a failed run; asks ``chassis power status -v`` when a
        non-verbose run's stderr does not say why the session failed. A command whose session
        was up but whose answer never came may have been carried out: the summary says so."""
        detail = _failure_detail(stderr)
        reason = classify_failure(stderr)
        if once and reason is Reason.TIMEOUT and _SESSION_FAILED not in stderr:
            detail += f"; {_MAY_HAVE_ACTED}"
        if reason is None and _SESSION_FAILED in stderr and not verbose:
            try:
                await self.status()
            except ActionError as diagnosis:
                return ActionError(diagnosis.reason, f"ipmitool {what}: {detail} ({diagnosis.summary})")
            reason = Reason.ERROR  # the BMC answers now: a transient failure
        return ActionError(reason or Reason.ERROR, f"ipmitool {what}: {detail}")

    async def status(self) -> PowerState:
        """Read the chassis power state (``chassis power status``)."""
        return parse_power_status(await self._run(["chassis", "power", "status"], verbose=True))

    async def command(self, action: PowerAction) -> None:
        """Send one ``chassis power on|off|reset``, at most once on the wire; no verification.

        A zero exit without ipmitool's confirmation line is a PROTOCOL error, and a lost answer
        a TIMEOUT; both summaries say that the command may have been carried out.
        """
        if action not in _COMMAND_WORDS:
            raise ValueError(f"IpmiDriver sends on, off or reset, not {action}; power_change does a cycle")
        output = await self._run(["chassis", "power", _COMMAND_WORDS[action]], verbose=True, once=True)
        if _COMMAND_CONFIRMATIONS[action] not in output:
            unexpected = output.strip()[:120]
            raise ActionError(
                Reason.PROTOCOL, f"ipmitool chassis power {action}: exit 0 but {unexpected!r}; {_MAY_HAVE_ACTED}"
            )
        log.info("%s: sent chassis power %s", self.address, action)

    async def sel(self, last: int = 20) -> list[SelEntry]:
        """The last ``last`` System Event Log records, oldest first (empty SEL → [])."""
        if last < 1:
            raise ValueError("last must be at least 1")
        return parse_sel(await self._run(["sel", "elist", "last", str(last)]))

    async def sensors(self) -> list[SensorReading]:
        """Every sensor with its reading, status and thresholds (``ipmitool sensor``)."""
        return (await self.sensor_report())[0]

    async def sensor_report(self) -> tuple[list[SensorReading], str | None]:
        """:meth:`sensors`, and what ipmitool complained about while listing them (exit 0)."""
        return parse_sensor_report(*await self._run_full(["sensor"]))

    async def health(self, sel_last: int = 20) -> BmcHealth:
        """Power state, the last ``sel_last`` SEL records and the sensors not ok, for the journal.

        The power state must be readable (else :class:`ActionError`); an unreadable SEL or
        sensor list is recorded in :attr:`BmcHealth.errors` instead. The calls run one after
        another: BMCs allow few concurrent sessions.
        """
        power = await self.status()
        errors: list[str] = []
        entries: tuple[SelEntry, ...] | None = None
        problems: tuple[SensorReading, ...] | None = None
        try:
            entries = tuple(await self.sel(sel_last))
        except ActionError as exc:
            errors.append(f"SEL unreadable ({exc.reason}: {exc.summary})")
        complaint = None
        try:
            readings, complaint = await self.sensor_report()
            problems = tuple(sensor for sensor in readings if sensor.status.problem)
        except ActionError as exc:
            errors.append(f"sensors unreadable ({exc.reason}: {exc.summary})")
        if complaint:
            errors.append(f"sensors incomplete (ipmitool: {complaint})")
        return BmcHealth(power, entries, problems, sel_last, tuple(errors), sensors_complete=complaint is None)
