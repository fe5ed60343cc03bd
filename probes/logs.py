"""``logs``: collect a host's system logs over SSH, keep them, and scan them for hardware and
software errors (contract: every 60 minutes; the host's ``ssh:`` block).

**Only what is new.** Each run reads what was written since the last run, and nothing twice:

* the systemd journal (``journal: true``) from the cursor after the last entry read
  (``journalctl --after-cursor``, JSON output, which carries every entry's cursor);
* each file in ``files`` from the byte offset reached last time, in the file with the inode
  read last time. When the path has another inode now (rotated by renaming), the rest of the
  old inode is read first wherever it was renamed to in the same directory (``find -inum``),
  then the new file from its start. A file that shrank under the same inode (``copytruncate``)
  is read from its start; so is a new file that reused the inode number of a deleted one (told
  apart by a checksum of its first bytes). A rotated file that is gone (compressed or deleted
  before the run) cannot be finished: the summary says so.

A first run has no position: it reads the last ``initial_lines`` journal entries and the last
``initial_bytes`` of each file (from a line start). Only complete lines are consumed; a line
still being written is read next time. At most ``max_bytes`` are read per source and run, in
chunks of :data:`CHUNK_BYTES` (one SSH command each); what is left is read by the next run.

**Kept.** Positions are kept in ``<state dir>/logs/<host>/<check>/positions.json``, written
after the lines, so a crash in between can store lines twice but never lose any. Lines are
appended to ``collected/YYYY-MM-DD.log`` (UTC date of the run; ``SOURCE<TAB>LINE``), and
files older than ``keep`` days are deleted.

**Matches.** Every new line not matching an ``ignore`` pattern is tried against the patterns
(``extra_patterns`` first, then ``patterns``, whose default is :data:`DEFAULT_PATTERNS`;
case-insensitive); the first match counts. Any match is a WARNING, a match of a pattern with
``severity: critical`` CRITICAL, both with ``Reason.THRESHOLD``; the summary gives the counts
per pattern and the first matched lines. Values: ``lines_read``, ``matches``,
``matches_critical``, ``backlog`` (1 when a source has more to read than ``max_bytes``).

A match is reported by the run that read the line only, so ``max_attempts`` defaults to 1
for this kind; ``timeout`` defaults to 2 minutes (an hour of logs is more than a banner). SSH failures keep their typed reasons (login refused: ``AUTH``, ...).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from monitord.shared.fields import Duration, Regex, StrictModel
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared import kept
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind
from remediation.osprofile import ps_literal
from remediation.ssh import DEFAULT_CONNECT_TIMEOUT, SshClient

CHUNK_BYTES = 512 * 1024
"""Bytes read by one SSH command (the SSH client keeps at most 1 MiB of a command's output,
and file chunks travel in base64)."""

JOURNAL_FIELDS = "MESSAGE,SYSLOG_IDENTIFIER,_PID,_HOSTNAME,PRIORITY"
_END = "@@monitord-journal-end"


class LogPattern(StrictModel):
    """A named pattern (a regular expression, matched case-insensitively) and its severity."""

    name: str = Field(min_length=1)
    regex: Regex
    severity: Literal["warning", "critical"] = "warning"


DEFAULT_PATTERNS: tuple[LogPattern, ...] = (
    LogPattern(name="EXT4 error", regex=r"EXT4-fs error", severity="critical"),
    LogPattern(name="XFS corruption", regex=r"XFS.*(corrupt|metadata I/O error|internal error|shut ?down)",
               severity="critical"),
    LogPattern(name="machine check", regex=r"machine check|\bMCE\b|\[Hardware Error\]", severity="critical"),
    LogPattern(name="RAID degraded", severity="critical",
               regex=r"DegradedArray|Fail(Spare)? event detected|md/raid\d*:\S+: (Disk failure|Operation continuing)"),
    LogPattern(name="SMART failing", regex=r"FAILED SMART|SMART (Failure|Prefailure)|FAILING_NOW", severity="critical"),
    LogPattern(name="I/O error", regex=r"\bI/O error"),
    LogPattern(name="out of memory", regex=r"Out of memory|invoked oom-killer|oom-kill:"),
    LogPattern(name="segfault", regex=r"segfault at|general protection fault"),
    LogPattern(name="NIC link down", regex=r"\bLink is Down\b|link status definitely down|carrier lost"),
)
"""Hardware and software errors likely to disrupt operation; filesystem, memory-hardware,
RAID and disk failures are critical. Checked in this order: the first match names a line."""

WINDOWS_PATTERNS: tuple[LogPattern, ...] = (
    LogPattern(name="disk error", severity="critical",
               regex=r" (disk|Microsoft-Windows-Disk)\[(7|11|15|51|52|153|157)\] "),
    LogPattern(name="NTFS error", severity="critical",
               regex=r" (Ntfs|Microsoft-Windows-Ntfs)\[(50|55|98|130|137|140)\] "),
    LogPattern(name="service crashed", regex=r" Service Control Manager\[(7022|7023|7024|7031|7034)\] "),
    LogPattern(name="unexpected shutdown", regex=r" (EventLog\[6008\]|Microsoft-Windows-Kernel-Power\[41\]) "),
)
"""Windows events (``PROVIDER[EVENT_ID]`` in :func:`event_line`): disk errors (bad block 7,
controller 11, paging 51, retried 153, ...) and NTFS corruption (55, 98, 137, ...) are
critical; a service that terminated unexpectedly (Service Control Manager 7031/7034, or
failed to start) and an unexpected shutdown (EventLog 6008, Kernel-Power 41) are warnings."""

DEFAULT_EVENT_LOGS = ("System", "Application")
EVENT_CHUNK = 500
"""Events read by one SSH command."""
_EVENTS_END = "@@monitord-events-end"


class LogsParams(CheckParams):
    """Which logs to read, what to look for, and how long to keep what was read."""

    kind: Literal["logs"] = "logs"
    max_attempts: int | None = Field(default=1, ge=1, le=100)
    timeout: Duration | None = 120.0
    journal: bool | None = Field(default=None, description="read the systemd journal (default: on linux hosts)")
    files: list[str] = Field(default_factory=list, description="absolute paths of log files on the host")
    event_logs: list[str] | None = Field(
        default=None, description="Windows event logs read with Get-WinEvent (default on windows hosts: System, Application)")
    patterns: list[LogPattern] | None = Field(
        default=None, description="replace the default patterns (Linux kernel and disk errors; on windows hosts "
        "disk, NTFS, service-crash and unexpected-shutdown events)")
    extra_patterns: list[LogPattern] = Field(default_factory=list, description="tried before patterns")
    ignore: list[Regex] = Field(default_factory=list, description="lines matching any of these are never matches")
    initial_lines: int = Field(default=200, ge=0, le=100_000, description="journal entries a first run reads")
    initial_bytes: int = Field(default=65536, ge=0, le=1 << 26, description="bytes of each file a first run reads")
    max_bytes: int = Field(default=8 << 20, ge=CHUNK_BYTES, le=1 << 30, description="per source and run")
    keep: Duration = Field(default=30 * 86400.0, description="how long collected lines are kept")
    show_lines: int = Field(default=5, ge=0, le=50, description="matched lines quoted in the summary")

    @field_validator("files")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        bad = [path for path in value if not path.startswith("/")]
        if bad:
            raise ValueError(f"log files need absolute paths: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _something_to_read(self) -> "LogsParams":
        if self.journal is False and not self.files and not self.event_logs:
            raise ValueError("nothing to read: set journal: true, list files or event_logs")
        return self

    def unsupported_on(self, os: str) -> str | None:
        """Journal and files are read with POSIX tools, event logs with PowerShell."""
        if os == "windows" and (self.journal or self.files):
            return "journal and files are read on linux hosts; a windows host has event_logs"
        if os != "windows" and self.event_logs:
            return "event_logs are read on windows hosts (os: windows)"
        return None

    def compiled(self, windows: bool = False) -> list[tuple[LogPattern, re.Pattern[str]]]:
        """The patterns in the order they are tried (the OS's defaults unless ``patterns`` is set)."""
        patterns = self.patterns if self.patterns is not None else (WINDOWS_PATTERNS if windows else DEFAULT_PATTERNS)
        return [(p, re.compile(p.regex, re.IGNORECASE)) for p in [*self.extra_patterns, *patterns]]


# --------------------------------------------------------------------------- reading


@dataclass
class Collected:
    """What one run read: lines per source, notes for the summary, sources left unfinished."""

    lines: list[tuple[str, str]] = field(default_factory=list)  # (source, line)
    notes: list[str] = field(default_factory=list)
    backlog: bool = False


def _journal_command(cursor: str | None, params: LogsParams, limit: int) -> str:
    """journalctl from ``cursor`` (or the last ``initial_lines``), cut at ``limit`` bytes; a
    complete output ends with an ``_END`` line carrying journalctl's exit status."""
    where = f"--after-cursor={shlex.quote(cursor)}" if cursor else f"--lines={params.initial_lines}"
    journal = f"journalctl --no-pager --quiet --output=json --output-fields={JOURNAL_FIELDS} {where}"
    return f"{{ LC_ALL=C {journal}; echo \"{_END} $?\"; }} | head -c {limit}"


def journal_line(entry: dict) -> str:
    """A journal entry as a syslog-style line: ``2024-05-14T10:22:01Z host ident[pid]: message``."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # not valid UTF-8: journalctl gives the bytes
        message = bytes(message).decode("utf-8", "replace")
    stamp = datetime.datetime.fromtimestamp(int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6, datetime.timezone.utc)
    ident = entry.get("SYSLOG_IDENTIFIER") or "kernel"
    pid = f"[{entry['_PID']}]" if entry.get("_PID") else ""
    text = str(message or "").replace("\n", "\\n")
    return f"{stamp:%Y-%m-%dT%H:%M:%SZ} {entry.get('_HOSTNAME', '-')} {ident}{pid}: {text}"


async def read_journal(ssh: SshClient, cursor: str | None, params: LogsParams, out: Collected) -> str | None:
    """Read the journal after ``cursor`` into ``out``; return the cursor to keep."""
    budget = params.max_bytes
    while budget > 0:
        limit = min(CHUNK_BYTES, budget)
        result = await ssh.run(_journal_command(cursor, params, limit))
        text = result.stdout
        complete = _END in text[-len(_END) - 8:]
        if complete:
            body, _, status = text.rstrip("\n").rpartition(_END)
            if status.strip() != "0":
                detail = result.stderr.strip().splitlines()[:1] or [f"exit {status.strip()}"]
                raise ProbeError(Reason.ERROR, f"journalctl failed: {detail[0][:200]}")
        else:
            body = text[: text.rfind("\n") + 1]  # drop the entry cut in half
            if not body:
                raise ProbeError(Reason.PROTOCOL, f"a journal entry is longer than {limit} bytes")
        for raw in body.splitlines():
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                raise ProbeError(Reason.PROTOCOL, f"journalctl printed {raw[:120]!r}, not JSON") from None
            out.lines.append(("journal", journal_line(entry)))
            cursor = entry.get("__CURSOR", cursor)
        budget -= len(text.encode())
        if complete:
            return cursor
    out.backlog = True
    return cursor


_FILE_SCRIPT = r"""f=%(path)s want=%(inode)s off=%(offset)s max=%(limit)s init=%(initial)s plen=%(plen)s psum=%(psum)s
prefix() { head -c "$1" -- "$2" | cksum | cut -d' ' -f1; }
set -- $(stat -Lc '%%i %%s' -- "$f" 2>/dev/null)
ino=${1:--} size=${2:-0} src=$f note=current
if [ "$want" != - ] && [ "$ino" != "$want" ]; then
  old=$(find "$(dirname -- "$f")" -maxdepth 1 -inum "$want" -type f -print -quit 2>/dev/null)
  oldsize=$( [ -n "$old" ] && stat -c %%s -- "$old" || echo 0)
  if [ -n "$old" ] && [ "$oldsize" -gt "$off" ]; then src=$old ino=$want size=$oldsize note=rotated
  elif [ -n "$old" ]; then off=0 note=switched
  else off=0 note=lost; fi
elif [ "$ino" != - ] && [ "$plen" -gt 0 ] && [ "$size" -ge "$off" ] && [ "$(prefix "$plen" "$f")" != "$psum" ]; then
  off=0 note=replaced
fi
[ "$ino" = - ] && { echo "- 0 0 missing 0 0"; exit 0; }
[ "$want" = - ] && { off=$(( size > init ? size - init : 0 )); note=first; }
[ "$size" -lt "$off" ] && { off=0; note=truncated; }
n=$(( size - off )); [ "$n" -gt "$max" ] && n=$max
plen=$(( size < %(prefix)d ? size : %(prefix)d ))
echo "$ino $size $off $note $plen $(prefix "$plen" "$src")"
tail -c +$(( off + 1 )) -- "$src" | head -c "$n" | base64
"""
"""One chunk of a log file: a header ``INODE SIZE OFFSET NOTE PREFIX_LEN PREFIX_CRC``, then the
bytes from OFFSET in base64 (offsets count bytes, and log files need not be valid UTF-8).

NOTE: ``current`` (the path's file), ``first`` (no position yet: the tail), ``rotated`` (the
rest of the old inode, renamed), ``switched`` (the old inode is finished: the new file from 0),
``lost`` (the old inode is gone: the new file from 0), ``replaced`` (same inode, but its first
bytes changed: a new file that reused the inode number of a deleted one, read from 0),
``truncated``, ``missing``. The prefix (CRC of the first PREFIX_LEN bytes, at most
:data:`PREFIX_BYTES`) is what tells a reused inode from the same file."""

PREFIX_BYTES = 256


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk as the file script printed it."""

    inode: str
    size: int
    offset: int
    note: str
    prefix_len: int
    prefix_sum: str
    data: bytes

    def position(self, consumed: int) -> dict:
        """The position to keep after ``consumed`` bytes of this chunk."""
        return {"inode": self.inode, "offset": self.offset + consumed, "plen": self.prefix_len,
                "psum": self.prefix_sum}


def parse_chunk(output: str) -> Chunk:
    """Split the file script's output into its header and data."""
    header, _, encoded = output.partition("\n")
    try:
        inode, size, offset, note, prefix_len, prefix_sum = header.split()
        return Chunk(inode, int(size), int(offset), note, int(prefix_len), prefix_sum, base64.b64decode(encoded))
    except (ValueError, binascii.Error):
        raise ProbeError(Reason.PROTOCOL, f"log reader printed {header[:120]!r}") from None


async def read_file(ssh: SshClient, path: str, position: dict, params: LogsParams, out: Collected) -> dict:
    """Read ``path`` on from ``position`` (``{"inode", "offset"}``) into ``out``; return the new position."""
    budget = params.max_bytes
    while budget > 0:
        limit = min(CHUNK_BYTES, budget)
        script = _FILE_SCRIPT % {
            "path": shlex.quote(path), "inode": shlex.quote(str(position.get("inode") or "-")),
            "offset": int(position.get("offset", 0)), "limit": limit, "initial": params.initial_bytes,
            "plen": int(position.get("plen", 0)), "psum": shlex.quote(str(position.get("psum", "-"))),
            "prefix": PREFIX_BYTES,
        }
        result = await ssh.run("sh -c " + shlex.quote(script))
        if not result.ok:
            raise ProbeError(Reason.ERROR, f"cannot read {path}: {result.describe()}")
        chunk = parse_chunk(result.stdout)
        if chunk.note == "missing":
            out.notes.append(f"{path} missing")
            return position
        if chunk.note == "lost":
            out.notes.append(f"{path} was rotated away before its last lines were read")
        elif chunk.note == "truncated":
            out.notes.append(f"{path} was truncated")
        elif chunk.note == "replaced":
            out.notes.append(f"{path} was replaced or truncated and refilled: read from its start")
        data, finished = chunk.data, chunk.offset + len(chunk.data) >= chunk.size
        if chunk.note == "rotated" and finished:
            take = len(data)  # nobody writes to a rotated file any more: its last line is complete
        else:
            take = data.rfind(b"\n") + 1 or (len(data) if len(data) >= limit else 0)
        skip = data.find(b"\n") + 1 if chunk.note == "first" and chunk.offset > 0 else 0
        text = data[min(skip, take):take].decode("utf-8", "replace")
        out.lines.extend((path, line) for line in text.splitlines())
        position = chunk.position(take)
        budget -= len(data)
        if chunk.note == "rotated" and finished:
            continue  # now the new file
        if finished or take == 0:
            return position
    out.backlog = True
    return position


_EVENTS_SCRIPT = """$ErrorActionPreference = 'Stop'
$log = %(channel)s; $after = %(after)d
try {
  if ($after -lt 0) { $events = @(Get-WinEvent -LogName $log -MaxEvents %(initial)d | Sort-Object RecordId) }
  else { $events = @(Get-WinEvent -LogName $log -FilterXPath "*[System[EventRecordID > $after]]" -MaxEvents %(chunk)d -Oldest) }
} catch [Exception] {
  if ($_.FullyQualifiedErrorId -notmatch 'NoMatchingEventsFound') { [Console]::Error.WriteLine($_.Exception.Message); exit 2 }
  $events = @()
}
foreach ($e in $events) {
  [pscustomobject]@{ id = $e.RecordId; time = $e.TimeCreated.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ');
    provider = $e.ProviderName; event = $e.Id; level = $e.LevelDisplayName; message = $e.Message } | ConvertTo-Json -Compress
}
'%(end)s'
"""
"""One chunk of a Windows event log, oldest first, as JSON lines: the first run the newest
``initial_lines`` events, then up to :data:`EVENT_CHUNK` events after record id ``after``
(``-Oldest`` with ``-MaxEvents`` returns the oldest matching ones). No new event is not an
error. The end marker says the output is complete."""


def event_line(channel: str, event: dict) -> str:
    """An event as a line: ``2026-11-26T01:02:03Z System Service Control Manager[7034] Error: message``."""
    message = " ".join(str(event.get("message") or "").split())
    return (f"{event.get('time', '-')} {channel} {event.get('provider', '-')}[{event.get('event', '-')}] "
            f"{event.get('level') or '-'}: {message}")


async def read_events(ssh: SshClient, channel: str, after: int | None, params: LogsParams, out: Collected) -> int | None:
    """Read the Windows event log ``channel`` after record id ``after`` into ``out``; return the
    record id to keep."""
    budget = params.max_bytes
    while budget > 0:
        script = _EVENTS_SCRIPT % {"channel": ps_literal(channel), "after": -1 if after is None else after,
                                   "initial": params.initial_lines, "chunk": EVENT_CHUNK, "end": _EVENTS_END}
        result = await ssh.run(ssh.profile.wrap(script))
        lines = result.stdout.splitlines()
        if not result.ok or not lines or lines[-1].strip() != _EVENTS_END:
            detail = (result.stderr.strip().splitlines() or [result.describe()])[0][:200]
            raise ProbeError(Reason.ERROR, f"Get-WinEvent {channel} failed: {detail}")
        events = []
        for raw in lines[:-1]:
            try:
                events.append(json.loads(raw))
            except ValueError:
                raise ProbeError(Reason.PROTOCOL, f"Get-WinEvent printed {raw[:120]!r}, not JSON") from None
        first_run = after is None
        for event in events:
            out.lines.append((channel, event_line(channel, event)))
            after = max(int(event["id"]), after if after is not None else -1)
        budget -= len(result.stdout.encode())
        if first_run or len(events) < EVENT_CHUNK:
            return after if after is not None else 0
    out.backlog = True
    return after


# --------------------------------------------------------------------------- keeping


def store(directory: Path, lines: list[tuple[str, str]], now: float, keep: float) -> None:
    """Append ``lines`` to today's file under ``directory`` and delete files older than ``keep``."""
    directory.mkdir(exist_ok=True, mode=0o700)
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    if lines:
        with open(directory / f"{today:%Y-%m-%d}.log", "a", encoding="utf-8") as out:
            out.writelines(f"{source}\t{line}\n" for source, line in lines)
    oldest = today - datetime.timedelta(days=max(1, round(keep / 86400)))
    for path in directory.glob("????-??-??.log"):
        try:
            day = datetime.date.fromisoformat(path.stem)
        except ValueError:
            continue
        if day < oldest:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- matching


def match(lines: list[tuple[str, str]], params: LogsParams, windows: bool = False) -> list[tuple[LogPattern, str]]:
    """The lines that match a pattern (not ignored), each with its first matching pattern."""
    patterns = params.compiled(windows)
    ignore = [re.compile(p, re.IGNORECASE) for p in params.ignore]
    found = []
    for _source, line in lines:
        if any(i.search(line) for i in ignore):
            continue
        hit = next((p for p, regex in patterns if regex.search(line)), None)
        if hit is not None:
            found.append((hit, line))
    return found


def grade(matches: list[tuple[LogPattern, str]], collected: Collected, params: LogsParams) -> Outcome:
    """The outcome for what was read and matched."""
    critical = sum(1 for pattern, _ in matches if pattern.severity == "critical")
    values = {"lines_read": float(len(collected.lines)), "matches": float(len(matches)),
              "matches_critical": float(critical), "backlog": float(collected.backlog)}
    notes = collected.notes + (["more to read than max_bytes: the rest next run"] if collected.backlog else [])
    if not matches:
        text = f"{len(collected.lines)} new log line{'s' if len(collected.lines) != 1 else ''}, no matches"
        return Outcome(Status.OK, "; ".join([text, *notes]), values=values)
    counts: dict[tuple[bool, str], int] = {}  # (not critical, name): critical patterns first
    for pattern, _ in matches:
        key = (pattern.severity != "critical", pattern.name)
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (item[0][0], -item[1]))
    per_pattern = ", ".join(f"{n} {name}" for (_, name), n in ordered)
    head = f"{len(matches)} log match{'es' if len(matches) != 1 else ''} ({per_pattern})"
    quoted = [line.strip()[:200] for _, line in matches[: params.show_lines]]
    summary = "; ".join([head, *notes]) + (": " + " | ".join(quoted) if quoted else "")
    return Outcome(Status.CRITICAL if critical else Status.WARNING, summary, Reason.THRESHOLD, values)


async def run(ctx: ProbeContext, call: ProbeCall, params: LogsParams) -> Outcome:
    """Read what is new, keep it, report matches."""
    directory = ctx.check_dir("logs", call)
    positions = kept.read_json(directory / "positions.json")
    ssh = SshClient.from_config(call.address, call.ssh, connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, call.timeout),
                                command_timeout=call.timeout)
    collected = Collected()
    windows = ssh.profile.name == "windows"
    new_positions: dict = {"files": dict(positions.get("files", {})), "events": dict(positions.get("events", {}))}
    if params.journal or (params.journal is None and not windows):
        new_positions["journal"] = await read_journal(ssh, positions.get("journal"), params, collected)
    for path in params.files:
        new_positions["files"][path] = await read_file(ssh, path, positions.get("files", {}).get(path, {}), params,
                                                       collected)
    for channel in (params.event_logs if params.event_logs is not None else DEFAULT_EVENT_LOGS) if windows else ():
        new_positions["events"][channel] = await read_events(ssh, channel, new_positions["events"].get(channel),
                                                             params, collected)
    store(directory / "collected", collected.lines, time.time(), params.keep)
    kept.write_json(directory / "positions.json", new_positions)
    return grade(match(collected.lines, params, windows), collected, params)


KIND = ProbeKind(
    "logs", LogsParams, run, default_interval=3600.0, threshold_notice=True,
    summary="system logs over SSH: collect what is new, keep it, report hardware and software errors",
    needs=frozenset({"ssh"}),
)
