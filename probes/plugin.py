"""``plugin``: run a Nagios / monitoring-plugins executable as a probe.

The plugin API (https://www.monitoring-plugins.org/doc/guidelines.html) in short: the exit
code is the verdict, the first line of standard output is the summary, and performance data
follows a ``|``, on the first line and, for long output, from the first later line holding a
``|`` to the end.

How a run maps to a result:

========================  =========================  ==========================================
plugin                    status                     reason
========================  =========================  ==========================================
exit 0                    OK                         none
exit 1 / exit 2           WARNING / CRITICAL         threshold: the plugin judged its own
                                                     thresholds or service state; its words
                                                     are the summary, nothing is guessed from
                                                     them
exit 3                    UNKNOWN                    error
exit > 3, killed, cannot  UNKNOWN                    error (stderr's first line in the summary)
be found or started
no exit within timeout    CRITICAL (by the runner)   timeout
========================  =========================  ==========================================

The plugin runs without a shell, in a session (and process group) of its own, with a small
environment (``PATH``, ``LC_ALL=C`` so numbers use a decimal point, then the check's ``env``):
the daemon's environment may hold secrets given as ``{env: VAR}``. When the run ends for any
reason (exit, the check's timeout, daemon shutdown) the whole group gets SIGKILL and the plugin
is reaped, so plugins stuck on a dead NFS mount cannot pile up (nagios-plugins #414). One in
uninterruptible sleep survives even SIGKILL: the run ends anyway, and the check is UNKNOWN
without starting another copy until that one has died.

Performance data become the result's values, named by their labels. Values are normalised to
base units: ``s``/``ms``/``us`` to seconds and ``B``/``KB``/``MB``/``GB``/``TB`` (and the
``KiB``... spellings) to bytes, with 1024 steps as monitoring-plugins use them; ``%``, ``c``
and other units are kept as written, and ``U`` (undetermined) values are left out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from monitord.shared.results import Outcome, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind

PLUGIN_DIRS = (Path("/usr/lib/nagios/plugins"), Path("/usr/lib/monitoring-plugins"))
"""Where a relative ``command`` is looked up, in this order."""

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
"""The environment a plugin starts with, before the check's ``env``."""

MAX_OUTPUT = 64 * 1024
"""At most this many bytes of each output stream are kept; the rest is read and dropped."""

DRAIN_SECONDS = 1.0
"""After the plugin exits, how long output still in its pipes may take to arrive."""

REAP_SECONDS = 1.0
"""After SIGKILL, how long to wait for the plugin to die (one stuck on a dead mount may not)."""

MAX_SUMMARY = 300

MACROS = ("HOST", "HOSTNAME", "ADDRESS", "HOSTADDRESS", "TIMEOUT")
"""Macros usable in ``args``; ``$$`` is a literal ``$``."""

_MACRO = re.compile(r"\$([A-Z_]*)\$")
_UNKILLABLE = "plugin.unkillable"

log = logging.getLogger(__name__)


class PluginParams(CheckParams):
    """Run ``command`` with ``args``; the exit code is the verdict, perfdata become values."""

    kind: Literal["plugin"] = "plugin"
    command: str = Field(
        min_length=1,
        description="the plugin: an absolute path, or a name looked up in "
                    + " and ".join(map(str, PLUGIN_DIRS)),
    )
    args: list[str] = Field(
        default_factory=list,
        description="arguments, no shell; macros: $HOST$/$HOSTNAME$ (host name), $ADDRESS$/$HOSTADDRESS$, "
                    "$TIMEOUT$ (whole seconds, one less than the check's timeout), $$ for a literal $",
    )
    env: dict[str, str] = Field(default_factory=dict, description="added to PATH and LC_ALL=C")

    @field_validator("command")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if "\0" in value or value != value.strip():
            raise ValueError("command is a path or a plugin name, without arguments (put those in args)")
        return value

    @field_validator("args")
    @classmethod
    def _known_macros(cls, value: list[str]) -> list[str]:
        for arg in value:
            for name in _MACRO.findall(arg):
                if name and name not in MACROS:
                    raise ValueError(f"unknown macro ${name}$ in {arg!r}; known: " + ", ".join(f"${m}$" for m in MACROS))
        return value


# ---------------------------------------------------------------------------------------
# Output and performance data


@dataclass(frozen=True, slots=True)
class PerfDatum:
    """One performance data item: ``'label'=value[UOM];[warn];[crit];[min];[max]``.

    ``value`` is as written (``None`` for ``U``); :meth:`normalised` converts it to base units.
    ``warn`` and ``crit`` are the plugin's range strings, unparsed.
    """

    label: str
    value: float | None
    uom: str = ""
    warn: str = ""
    crit: str = ""
    min: float | None = None
    max: float | None = None

    def normalised(self) -> float | None:
        """The value in seconds or bytes where the unit says which, else as written."""
        if self.value is None:
            return None
        return self.value * _UNIT_SCALE.get(self.uom, 1.0)


_UNIT_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "B": 1.0}
for _power, _prefix in enumerate("KMGT", start=1):
    _UNIT_SCALE[f"{_prefix}B"] = _UNIT_SCALE[f"{_prefix}iB"] = float(1024**_power)

_LABEL = re.compile(r"'((?:[^']|'')+)'=|([^'\s=][^\s=]*)=")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE = re.compile(rf"({_NUMBER}|U)([A-Za-z%]*)")
_BLANK = re.compile(r"\s")


def _number(text: str) -> float | None:
    return float(text) if re.fullmatch(_NUMBER, text) else None


def parse_perfdata(text: str) -> list[PerfDatum]:
    """Parse space-separated perfdata items; malformed items are skipped, the rest kept.

    Labels in single quotes may hold spaces and ``=``; ``''`` in them is a literal quote.
    """
    items: list[PerfDatum] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return items
        label_match = _LABEL.match(text, pos)
        if label_match is None:  # not an item: skip to the next blank
            pos = _next_blank(text, pos)
            continue
        label = label_match.group(1).replace("''", "'") if label_match.group(1) is not None else label_match.group(2)
        end = _next_blank(text, label_match.end())
        fields = text[label_match.end():end].split(";")
        pos = end
        value_match = _VALUE.fullmatch(fields[0])
        if value_match is None:
            continue
        fields += [""] * (5 - len(fields))
        number, uom = value_match.groups()
        items.append(PerfDatum(
            label=label, value=None if number == "U" else float(number), uom=uom,
            warn=fields[1], crit=fields[2], min=_number(fields[3]), max=_number(fields[4]),
        ))


def _next_blank(text: str, pos: int) -> int:
    match = _BLANK.search(text, pos)
    return match.start() if match else len(text)


@dataclass(frozen=True, slots=True)
class PluginOutput:
    """A plugin's standard output, split by the plugin API."""

    summary: str
    long_text: str
    perfdata: list[PerfDatum]

    @classmethod
    def parse(cls, stdout: str) -> "PluginOutput":
        """Split the first line, the long output and every perfdata part."""
        lines = stdout.splitlines() or [""]
        summary, _, perf = lines[0].partition("|")
        long_lines: list[str] = []
        perf_parts = [perf]
        for i, line in enumerate(lines[1:], start=1):
            if "|" in line:
                text, _, rest = line.partition("|")
                long_lines.append(text)
                perf_parts.extend([rest, *lines[i + 1:]])
                break
            long_lines.append(line)
        return cls(summary.strip(), "\n".join(long_lines).strip(), parse_perfdata(" ".join(perf_parts)))

    def values(self) -> dict[str, float]:
        """The perfdata values in base units, by label (undetermined ones left out)."""
        return {item.label: value for item in self.perfdata if (value := item.normalised()) is not None}


# ---------------------------------------------------------------------------------------
# Verdicts

VERDICTS: dict[int, tuple[Status, Reason]] = {
    0: (Status.OK, Reason.NONE),
    1: (Status.WARNING, Reason.THRESHOLD),
    2: (Status.CRITICAL, Reason.THRESHOLD),
    3: (Status.UNKNOWN, Reason.ERROR),
}
"""What a plugin exit code (or a passive check's Nagios status) means for a check."""


def resolve(command: str) -> Path | None:
    """The plugin's path: ``command`` if absolute, else the first match in :data:`PLUGIN_DIRS`."""
    if os.path.isabs(command):
        return Path(command) if os.path.lexists(command) else None
    return next((directory / command for directory in PLUGIN_DIRS if (directory / command).exists()), None)


def expand(arg: str, call: ProbeCall) -> str:
    """Replace the macros of ``arg`` with the call's values."""
    values = {
        "HOST": call.host, "HOSTNAME": call.host, "ADDRESS": call.address, "HOSTADDRESS": call.address,
        "TIMEOUT": str(max(1, int(call.timeout) - 1)), "": "$",
    }
    return _MACRO.sub(lambda match: values[match.group(1)], arg)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:MAX_SUMMARY]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _unknown(summary: str) -> Outcome:
    return Outcome(Status.UNKNOWN, summary[:MAX_SUMMARY], Reason.ERROR)


# ---------------------------------------------------------------------------------------
# Running


class _PluginProtocol(asyncio.SubprocessProtocol):
    """Keeps the first :data:`MAX_OUTPUT` bytes of stdout and stderr, and tells the plugin's exit
    apart from the end of its pipes (a child it left behind may hold those open)."""

    def __init__(self) -> None:
        self.pid = 0
        self.output = {1: bytearray(), 2: bytearray()}
        self.exited = asyncio.Event()
        self.drained = asyncio.Event()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        kept = self.output[fd]
        kept += data[: MAX_OUTPUT - len(kept)]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            self.drained.set()

    def process_exited(self) -> None:
        self.exited.set()

    def text(self, fd: int) -> str:
        """What the plugin wrote to ``fd`` (1 or 2), decoded."""
        return self.output[fd].decode("utf-8", "replace")


def _kill_group(pid: int) -> None:
    """SIGKILL every process left in the plugin's process group."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


Unkillable = dict[tuple[str, ...], _PluginProtocol]
"""Plugins that outlived SIGKILL (uninterruptible sleep on a dead mount), by argv."""


async def execute(argv: list[str], env: dict[str, str], unkillable: Unkillable | None = None) -> tuple[int, str, str]:
    """Run ``argv`` in a new session; return exit code (negative: signal), stdout and stderr.

    Whatever ends the run (exit, cancellation by the runner's timeout), the process group is
    killed and the plugin reaped before this returns or re-raises. Once the plugin has exited,
    children it left behind are killed too, and output still buffered in the pipes is read
    for at most :data:`DRAIN_SECONDS` (a child that left the group may hold them open). A
    plugin still alive :data:`REAP_SECONDS` after SIGKILL is left to the child watcher and
    noted in ``unkillable``.
    """
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(loop.subprocess_exec(
        _PluginProtocol, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
    ))
    cancelled: asyncio.CancelledError | None = None
    try:
        transport, protocol = await asyncio.shield(starting)
    except asyncio.CancelledError as exc:
        # The plugin may run already, and asyncio, cancelled while it connects the pipes, would
        # wait for them to close: for every child holding them. Finish starting it (a moment)
        # instead, so that its group is killed and it is reaped below.
        cancelled = exc
        try:
            transport, protocol = await starting
        except OSError:
            raise exc from None
    protocol.pid = pid = transport.get_pid()
    try:
        if cancelled is not None:
            raise cancelled
        await protocol.exited.wait()
        _kill_group(pid)
        await _within(DRAIN_SECONDS, protocol.drained)
    finally:
        _kill_group(pid)
        try:
            if not await _within(REAP_SECONDS, protocol.exited) and unkillable is not None:
                log.warning("plugin %s (pid %d) survived SIGKILL; no new run until it dies", argv[0], pid)
                unkillable[tuple(argv)] = protocol
        finally:
            transport.close()
    return transport.get_returncode(), protocol.text(1), protocol.text(2)


async def _within(seconds: float, event: asyncio.Event) -> bool:
    """Wait up to ``seconds`` for ``event``; return whether it is set."""
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def _new_unkillable(ctx: ProbeContext) -> Unkillable:
    """A resource factory: the context's record of plugins that survived SIGKILL."""
    return {}


async def run(ctx: ProbeContext, call: ProbeCall, params: PluginParams) -> Outcome:
    """Run the plugin and turn its exit code and output into an outcome."""
    path = resolve(params.command)
    if path is None:
        where = "" if os.path.isabs(params.command) else " in " + ", ".join(map(str, PLUGIN_DIRS))
        return _unknown(f"plugin {params.command} not found{where}")
    if not (path.is_file() and os.access(path, os.X_OK)):
        return _unknown(f"plugin {path} is not an executable file")
    argv = [str(path), *(expand(arg, call) for arg in params.args)]
    unkillable = await ctx.resource(_UNKILLABLE, _new_unkillable)
    stuck = unkillable.get(tuple(argv))
    if stuck is not None and not stuck.exited.is_set():
        return _unknown(f"plugin {path.name} of an earlier run (pid {stuck.pid}) survived SIGKILL; not starting another")
    unkillable.pop(tuple(argv), None)
    try:
        code, stdout, stderr = await execute(argv, {**BASE_ENV, **params.env}, unkillable)
    except OSError as exc:  # exec failed (bad interpreter line, ...): about this host, not the target
        return _unknown(f"cannot run plugin {path}: {exc.strerror or exc}")
    output = PluginOutput.parse(stdout)
    values = output.values()
    if code in VERDICTS:
        status, reason = VERDICTS[code]
        return Outcome(status, (output.summary or _first_line(stderr) or "(no output from plugin)")[:MAX_SUMMARY],
                       reason, values)
    detail = _first_line(stderr) or output.summary or "no output"
    if code < 0:
        return _unknown(f"plugin {path.name} killed by {_signal_name(-code)}: {detail}")
    return _unknown(f"plugin {path.name} exited with code {code}: {detail}")


KIND = ProbeKind(
    "plugin", PluginParams, run, default_interval=600.0,
    summary="a Nagios/monitoring-plugins executable; exit code is the verdict, perfdata become values",
)
