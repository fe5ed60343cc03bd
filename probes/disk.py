"""``disk``: disk and inode usage per filesystem, read locally, over SSH or over SNMP.

**The percentage.** Every transport reports what ``df`` prints, because that is what the
admins and the customer see: *used / (used + available)*, rounded **up** to a whole percent,
where *used* = size - free and *available* is what an unprivileged user may still write (so
blocks reserved for root count as neither). It is computed here from sizes, never taken from
a tool's own percentage column, so the transports agree on the same host:

* ``local``: ``statvfs`` (``f_blocks - f_bfree`` used, ``f_bavail`` available);
  inodes ``f_files - f_ffree`` used of ``f_files``.
* ``ssh``: the numbers of ``df -Pk`` and ``df -Pi`` (``LC_ALL=C``); ``-`` (a filesystem without
  inodes) gives no inode figure. On a Windows host (``os: windows``) ``Get-CimInstance
  Win32_LogicalDisk`` instead: local fixed drives, used = size − free, no inode figure.
* ``snmp``: UCD-SNMP-MIB ``dskTable``'s 64-bit ``dskUsed``/``dskAvail`` (KiB, so at most a
  rounding apart from ``df``). The MIB has no inode counts: the inode figure is the agent's
  ``dskPercentNode``, which net-snmp may round down where ``df`` rounds up (one point at most).
  Agents without a ``dskTable`` (no ``disk``/``includeAllDisks`` line in snmpd.conf) fall back
  to HOST-RESOURCES ``hrStorageTable`` fixed/removable/network disks: *hrStorageUsed /
  hrStorageSize* rounded up, which has no "available" figure and so reads lower than ``df`` on
  filesystems with reserved blocks, and has no inode figures at all.

Rows are matched by mount point (``dskPath``, ``hrStorageDescr``), never by configured index.

**Which filesystems.** All mounted filesystems, except: types in ``exclude_types`` (default
:data:`PSEUDO_FS_TYPES`: kernel, memory and image filesystems), read-only mounts (unless
``include_readonly``), mount points not matching any ``include`` pattern (when given) or
matching an ``exclude`` pattern (shell globs on the mount point, ``*`` also matches ``/``).
Over SNMP the type is not in the MIB: a row whose device is named like a pseudo filesystem
(Linux names a tmpfs mount's source ``tmpfs``) counts as that type; read-only comes from
``hrFSAccess`` when the agent has an ``hrFSTable``.

**Thresholds.** A filesystem at or above ``critical_percent`` or ``inode_critical_percent``
(defaults: the host's cascaded settings of the same names, ``disk_critical_percent`` and
``inode_critical_percent``, contract 90 % and 50 %) makes the check CRITICAL, at or above
``warning_percent`` or ``inode_warning_percent`` (default: none) WARNING, both with reason
``THRESHOLD``: a notice to the customer, never a power action. The summary names the worst
filesystems first. Values: ``disk_used_percent:<mount>``, ``inode_used_percent:<mount>`` and
``filesystems`` (how many were read).

**Hung mounts.** Locally each ``statvfs`` runs in a daemon thread of its own and is waited for
at most ``statvfs_timeout``; a mount that does not answer (a dead NFS server) is reported as
unknown while the others are evaluated. Such a thread cannot be killed: it is left blocked, and
later runs wait on the same call rather than start another, so one dead mount holds one thread
whatever the number of runs, and never blocks the daemon's exit (daemon thread, no pool to
join). Over SSH, excluded types are passed to ``df -x`` (GNU df, as on every Linux host) so
they are never touched; a mount that hangs df makes the run a TIMEOUT, bounded by the check's
timeout. Over SNMP the agent itself must cope.

SSH uses the host's ``ssh:`` block, SNMP its ``snmp:`` block (both required by the config for
such checks). ``local`` reads the daemon's own host, whatever the host's address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shlex
import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable, Literal

from pydantic import Field, model_validator

from monitord.shared.fields import Duration, Percent
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind

PSEUDO_FS_TYPES: tuple[str, ...] = (
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
    "efivarfs", "fusectl", "fuse.lxcfs", "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay", "proc",
    "pstore", "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs",
)
"""Filesystem types not watched by default: kernel interfaces, memory-backed, images, overlays."""

MOUNTS_FILE = "/proc/self/mounts"
SUMMARY_ITEMS = 3
"""How many breaches (or unreadable mounts) a summary names before ``and N more``."""

_SECTION = "--monitord-disk-section--"


class DiskParams(CheckParams):
    """Disk and inode usage of a host's filesystems; see the module docstring."""

    kind: Literal["disk"] = "disk"
    transport: Literal["local", "ssh", "snmp"] = Field(
        default="local", description="local: the daemon's own host; ssh: df over the host's ssh: block; "
        "snmp: dskTable/hrStorageTable from the host's snmp: block")
    warning_percent: Percent | None = None
    critical_percent: Percent | None = Field(default=None, description="default: disk_critical_percent (90)")
    inode_warning_percent: Percent | None = None
    inode_critical_percent: Percent | None = Field(default=None, description="default: inode_critical_percent (50)")
    include: list[str] = Field(default_factory=list, description="mount point globs to watch (default: all)")
    exclude: list[str] = Field(default_factory=list, description="mount point globs not to watch")
    exclude_types: list[str] = Field(
        default_factory=lambda: list(PSEUDO_FS_TYPES), description="filesystem types (globs) not to watch")
    include_readonly: bool = Field(default=False, description="also watch read-only mounts")
    statvfs_timeout: Duration = Field(default=2.0, description="local: a mount slower than this counts as hung")
    snmp_table: Literal["auto", "ucd", "host-resources"] = Field(
        default="auto", description="auto: dskTable, else hrStorageTable")

    @model_validator(mode="after")
    def _levels(self) -> "DiskParams":
        for warning, critical in (("warning_percent", "critical_percent"),
                                  ("inode_warning_percent", "inode_critical_percent")):
            low, high = getattr(self, warning), getattr(self, critical)
            if low is not None and high is not None and low >= high:
                raise ValueError(f"{warning} {low:g} must be below {critical} {high:g}")
        return self

    def needs(self) -> frozenset[str]:
        """The host's ``ssh:`` or ``snmp:`` block, by transport."""
        return frozenset() if self.transport == "local" else frozenset({self.transport})

    def inherit(self, setting: Callable[[str], Any]) -> "DiskParams":
        """Unset critical levels from ``disk_critical_percent`` and ``inode_critical_percent``."""
        update = {
            field: setting(name)
            for field, name in (("critical_percent", "disk_critical_percent"),
                                ("inode_critical_percent", "inode_critical_percent"))
            if getattr(self, field) is None
        }
        return self.model_copy(update=update) if update else self

    def selects(self, mount: "Mount") -> bool:
        """Whether ``mount`` is watched (type, read-only and mount point filters)."""
        if mount.fstype is not None and any(fnmatchcase(mount.fstype, t) for t in self.exclude_types):
            return False
        if mount.readonly and not self.include_readonly:
            return False
        if self.include and not any(fnmatchcase(mount.path, p) for p in self.include):
            return False
        return not any(fnmatchcase(mount.path, p) for p in self.exclude)


@dataclass(frozen=True, slots=True)
class Mount:
    """A mounted filesystem; ``fstype`` and ``readonly`` are None when the transport cannot tell."""

    path: str
    device: str
    fstype: str | None = None
    readonly: bool | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """One filesystem's usage in whole percent (None: not known, e.g. no inodes)."""

    mount: str
    disk: int | None
    inodes: int | None


Unreadable = dict[str, tuple[Reason, str]]
"""Mount points that could not be read: the reason and why."""


def used_percent(used: int | None, available: int | None) -> int | None:
    """``df``'s Use%: used / (used + available), rounded up; None when unknown or both are 0."""
    if used is None or available is None or used + available <= 0:
        return None
    return -(-100 * used // (used + available))


# ---------------------------------------------------------------------------------------
# Parsing (pure: /proc/self/mounts, df -P output)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape_mount_field(field: str) -> str:
    """Undo the kernel's octal escapes in a mounts field (``\\040`` is a space)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> dict[str, Mount]:
    """``/proc/self/mounts`` as mounts by mount point; of several mounts on one point the last
    (the one visible) wins."""
    mounts: dict[str, Mount] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, path, fstype, options = (unescape_mount_field(f) for f in fields[:4])
        mounts.pop(path, None)  # re-insert so that the order follows the visible mounts
        mounts[path] = Mount(path, device, fstype, "ro" in options.split(","))
    return mounts


@dataclass(frozen=True, slots=True)
class DfRow:
    """One ``df -P`` line: sizes in KiB (or inode counts with ``-i``); None where df prints ``-``."""

    device: str
    total: int | None
    used: int | None
    available: int | None
    mount: str


_DF_ROW = re.compile(
    r"^(?P<device>.*?)\s+(?P<total>-|\d+)\s+(?P<used>-|\d+)\s+(?P<available>-|\d+)\s+(?:-|\d+%)\s+(?P<mount>/.*)$"
)


def parse_df(text: str) -> dict[str, DfRow]:
    """``df -P`` or ``df -Pi`` output (C locale) as rows by mount point.

    Robust to device names and mount points with spaces (the device is the shortest prefix
    followed by four number columns and an absolute path) and to a long device name wrapped
    onto a line of its own, as non-POSIX df prints it. The header and unparseable lines are
    skipped.
    """
    rows: dict[str, DfRow] = {}
    pending = ""  # a line that did not parse: perhaps a wrapped device name awaiting its numbers
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        match = _DF_ROW.match(f"{pending} {line.strip()}") if pending else None
        match = match or _DF_ROW.match(line)
        pending = "" if match else line
        if match:
            numbers = [None if match[k] == "-" else int(match[k]) for k in ("total", "used", "available")]
            rows[match["mount"]] = DfRow(match["device"].strip(), *numbers, match["mount"])
    return rows


def ssh_command(exclude_types: Iterable[str]) -> str:
    """The remote command: the mount table, then ``df -Pk`` and ``df -Pi`` in the C locale, with
    the plain (non-glob) excluded types passed to ``df -x`` so that df never touches them."""
    skip = "".join(f" -x {shlex.quote(t)}" for t in exclude_types if not any(c in t for c in "*?["))
    return (f"LC_ALL=C; export LC_ALL; cat {MOUNTS_FILE}; echo {_SECTION}; df -Pk{skip}; "
            f"echo {_SECTION}; df -Pi{skip}")


def parse_ssh_output(stdout: str) -> tuple[list[Mount], list[Usage]]:
    """What :func:`ssh_command` printed: the filesystems df listed (with type and read-only
    flag from the mount table where it has them) and their usage."""
    sections = stdout.split(f"{_SECTION}\n")
    if len(sections) != 3:
        raise ProbeError(Reason.PROTOCOL, "df output is incomplete (the remote command was cut short)")
    table = parse_mounts(sections[0])
    blocks, inodes = parse_df(sections[1]), parse_df(sections[2])
    mounts, usages = [], []
    for path, row in blocks.items():
        known = table.get(path)
        mounts.append(Mount(path, row.device, known.fstype if known else None, known.readonly if known else None))
        inode = inodes.get(path)
        usages.append(Usage(path, used_percent(row.used, row.available),
                            used_percent(inode.used, inode.available) if inode else None))
    return mounts, usages


WINDOWS_DISK_SCRIPT = (
    "Get-CimInstance -ClassName Win32_LogicalDisk -Filter 'DriveType=3' | "
    "ForEach-Object { \"{0}`t{1}`t{2}`t{3}\" -f $_.DeviceID, $_.FileSystem, $_.Size, $_.FreeSpace }")
"""A Windows host's local fixed disks (DriveType 3): drive, filesystem, size and free bytes."""


def parse_windows_disks(stdout: str) -> tuple[list[Mount], list[Usage]]:
    """What :data:`WINDOWS_DISK_SCRIPT` printed. Used is size − free, so the percentage is df's
    (used / (used + available), rounded up); NTFS has no inode limit (inodes: None). A drive
    without a size (no media) is skipped."""
    mounts, usages = [], []
    for line in stdout.splitlines():
        parts = line.strip("\r").split("\t")
        if len(parts) != 4 or not parts[2].strip().isdigit() or not parts[3].strip().isdigit():
            continue
        drive, fstype, size, free = parts[0].strip(), parts[1].strip() or None, int(parts[2]), int(parts[3])
        mounts.append(Mount(drive, drive, fstype, None))
        usages.append(Usage(drive, used_percent(size - free, free), None))
    return mounts, usages


# ---------------------------------------------------------------------------------------
# Evaluation (pure)


@dataclass(frozen=True, slots=True)
class _Breach:
    status: Status
    mount: str
    what: str
    percent: int
    limit: float

    def __str__(self) -> str:
        return f"{self.mount} {self.what} {self.percent}% (>= {self.limit:g}%)"


def evaluate(params: DiskParams, usages: list[Usage], unreadable: Unreadable) -> Outcome:
    """The check's outcome for the watched filesystems' ``usages`` and those that could not be
    read (mount point -> reason and why)."""
    values: dict[str, float] = {"filesystems": float(len(usages))}
    breaches: list[_Breach] = []
    for usage in usages:
        for what, percent, warning, critical in (
            ("disk", usage.disk, params.warning_percent, params.critical_percent),
            ("inodes", usage.inodes, params.inode_warning_percent, params.inode_critical_percent),
        ):
            if percent is None:
                continue
            values[f"{'disk' if what == 'disk' else 'inode'}_used_percent:{usage.mount}"] = float(percent)
            if critical is not None and percent >= critical:
                breaches.append(_Breach(Status.CRITICAL, usage.mount, what, percent, critical))
            elif warning is not None and percent >= warning:
                breaches.append(_Breach(Status.WARNING, usage.mount, what, percent, warning))
    problems = [f"{mount}: {why}" for mount, (_reason, why) in unreadable.items()]
    if breaches:
        breaches.sort(key=lambda b: (-b.status, b.limit - b.percent, b.mount))
        summary = _listing([str(b) for b in breaches])
        if problems:
            summary += f"; not read: {_listing(problems)}"
        return Outcome(max(b.status for b in breaches), summary, Reason.THRESHOLD, values)
    if unreadable:
        reasons = {reason for reason, _why in unreadable.values()}
        reason = Reason.TIMEOUT if reasons == {Reason.TIMEOUT} else Reason.ERROR
        return Outcome(Status.UNKNOWN, f"not read: {_listing(problems)}", reason, values)
    if not usages:
        return Outcome(Status.UNKNOWN, "no filesystem to watch: all excluded by type, read-only or pattern",
                       Reason.ERROR, values)
    return Outcome(Status.OK, _fullest(usages), Reason.NONE, values)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SUMMARY_ITEMS])
    return shown + (f" and {len(items) - SUMMARY_ITEMS} more" if len(items) > SUMMARY_ITEMS else "")


def _fullest(usages: list[Usage]) -> str:
    parts = [f"{len(usages)} filesystem{'s' if len(usages) != 1 else ''} below thresholds"]
    for label, attribute in (("fullest", "disk"), ("most inodes", "inodes")):
        known = [u for u in usages if getattr(u, attribute) is not None]
        if known:
            top = max(known, key=lambda u: getattr(u, attribute))
            parts.append(f"{label} {top.mount} {getattr(top, attribute)}%")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# Transports


class _StatvfsCalls:
    """``os.statvfs`` in daemon threads, with at most one call outstanding per mount point."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, concurrent.futures.Future] = {}

    def start(self, path: str) -> concurrent.futures.Future:
        """A future for ``statvfs(path)``: the call still running for ``path`` (a hung mount), or a new one."""
        with self._lock:
            future = self._calls.get(path)
            if future is not None and not future.done():
                return future
            future = self._calls[path] = concurrent.futures.Future()
        threading.Thread(target=self._run, args=(path, future), name="monitord-statvfs", daemon=True).start()
        return future

    def _run(self, path: str, future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(os.statvfs(path))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting probe
            future.set_exception(exc)
        finally:
            with self._lock:
                if self._calls.get(path) is future:
                    del self._calls[path]


_STATVFS = _StatvfsCalls()


def _forget_outcome(call: asyncio.Future) -> None:
    """Retrieve the late outcome of a call this run gave up on (a hung mount that fails at
    last), which asyncio would otherwise log as an error nobody retrieved."""
    if not call.cancelled():
        call.exception()


async def read_local(params: DiskParams, mounts_file: str = MOUNTS_FILE) -> tuple[list[Usage], Unreadable]:
    """Usage of this machine's watched filesystems, and those that did not answer in time."""
    with open(mounts_file, encoding="utf-8", errors="surrogateescape") as handle:
        mounts = [m for m in parse_mounts(handle.read()).values() if params.selects(m)]
    calls = {m.path: asyncio.wrap_future(_STATVFS.start(m.path)) for m in mounts}
    if calls:
        await asyncio.wait(calls.values(), timeout=params.statvfs_timeout)
    usages, unreadable = [], {}
    for path, call in calls.items():
        if not call.done():
            call.add_done_callback(_forget_outcome)
            unreadable[path] = (Reason.TIMEOUT, f"statvfs hung for {params.statvfs_timeout:g}s")
        elif call.exception() is not None:
            exc = call.exception()
            unreadable[path] = (Reason.ERROR, getattr(exc, "strerror", None) or str(exc))
        else:
            st = call.result()
            usages.append(Usage(path, used_percent(st.f_blocks - st.f_bfree, st.f_bavail),
                                used_percent(st.f_files - st.f_ffree, st.f_ffree)))
    return usages, unreadable


async def read_ssh(call: ProbeCall, params: DiskParams) -> list[Usage]:
    """Usage of the watched filesystems by ``df`` over the host's ``ssh:`` block."""
    from remediation.ssh import DEFAULT_CONNECT_TIMEOUT, SshClient  # imports the config: not at module load

    client = SshClient.from_config(call.address, call.ssh, connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, call.timeout),
                                   command_timeout=call.timeout)
    if client.profile.name == "windows":
        result = await client.run(client.profile.wrap(WINDOWS_DISK_SCRIPT))
        mounts, usages = parse_windows_disks(result.stdout)
    else:
        result = await client.run(ssh_command(params.exclude_types))
        mounts, usages = parse_ssh_output(result.stdout)
    if not mounts:  # df exits 1 when one filesystem fails but prints the others
        where = client.target.host_label
        raise ProbeError(Reason.PROTOCOL, f"ssh {where}: df listed no filesystem ({result.describe()})")
    watched = {m.path for m in mounts if params.selects(m)}
    return [u for u in usages if u.mount in watched]


# UCD-SNMP-MIB dskEntry, HOST-RESOURCES-MIB hrStorageEntry and hrFSEntry.
DSK_ENTRY = (1, 3, 6, 1, 4, 1, 2021, 9, 1)
DSK_COLUMNS = {"path": 2, "device": 3, "percent": 9, "percent_node": 10,
               "avail_low": 13, "avail_high": 14, "used_low": 15, "used_high": 16}
HR_STORAGE_ENTRY = (1, 3, 6, 1, 2, 1, 25, 2, 3, 1)
HR_STORAGE_COLUMNS = {"type": 2, "descr": 3, "size": 5, "used": 6}  # a ratio: allocation units cancel out
HR_STORAGE_DISK_TYPES = {(1, 3, 6, 1, 2, 1, 25, 2, 1, n) for n in (4, 5, 10)}  # fixed, removable, network disk
HR_FS_ENTRY = (1, 3, 6, 1, 2, 1, 25, 3, 8, 1)
HR_FS_COLUMNS = {"mount": 2, "access": 5}  # access: 1 readWrite, 2 readOnly


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8", "replace")


def _counter64(row: dict[str, Any], name: str) -> int | None:
    """A 64-bit dskTable figure from its Low/High Unsigned32 halves, or None if the agent lacks them."""
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    return None if low is None or high is None else (int(high) << 32) | int(low)


def dsk_usages(rows: dict[Any, dict[str, Any]]) -> tuple[list[Mount], list[Usage]]:
    """Mounts and usage from walked ``dskTable`` rows (64-bit sizes; ``dskPercent`` only for
    agents without them)."""
    mounts, usages = [], []
    for row in rows.values():
        if "path" not in row:
            continue
        path, device = _text(row["path"]), _text(row.get("device", b""))
        disk = used_percent(_counter64(row, "used"), _counter64(row, "avail"))
        if disk is None and "percent" in row:
            disk = int(row["percent"])
        node = row.get("percent_node")
        mounts.append(Mount(path, device, device if device in PSEUDO_FS_TYPES else None))
        usages.append(Usage(path, disk, int(node) if node is not None else None))
    return mounts, usages


def hr_storage_usages(rows: dict[Any, dict[str, Any]]) -> tuple[list[Mount], list[Usage]]:
    """Mounts and usage from walked ``hrStorageTable`` rows of disk types (no inode figures)."""
    mounts, usages = [], []
    for row in rows.values():
        if "descr" not in row or tuple(row.get("type", ())) not in HR_STORAGE_DISK_TYPES:
            continue
        path = _text(row["descr"])
        size, used = (int(row[k]) & 0xFFFFFFFF if k in row else None for k in ("size", "used"))  # unsigned
        mounts.append(Mount(path, path))
        free = size - used if size is not None and used is not None else None
        usages.append(Usage(path, used_percent(used, free), None))
    return mounts, usages


async def _table(session: Any, entry: tuple[int, ...], columns: dict[str, int]) -> dict[Any, dict[str, Any]]:
    """Walk ``columns`` of one table at once: rows by index, each a dict of the columns it has."""
    walked = await asyncio.gather(*(session.walk(entry + (number,)) for number in columns.values()))
    rows: dict[Any, dict[str, Any]] = {}
    for name, column in zip(columns, walked):
        for index, value in column.items():
            rows.setdefault(index, {})[name] = value
    return rows


async def read_snmp(call: ProbeCall, params: DiskParams) -> list[Usage]:
    """Usage of the watched filesystems from the host's SNMP agent."""
    from remediation.snmp import DEFAULT_RETRIES, DEFAULT_TIMEOUT, SnmpSession  # imports the config: not at module load

    timeout = min(DEFAULT_TIMEOUT, call.timeout / (DEFAULT_RETRIES + 1))
    async with SnmpSession.from_config(call.snmp, call.address, timeout=timeout, retries=DEFAULT_RETRIES) as session:
        readonly: dict[str, bool] = {}
        if not params.include_readonly:
            fs_rows = await _table(session, HR_FS_ENTRY, HR_FS_COLUMNS)
            readonly = {_text(r["mount"]): int(r["access"]) == 2 for r in fs_rows.values() if len(r) == 2}
        mounts: list[Mount] = []
        if params.snmp_table != "host-resources":
            mounts, usages = dsk_usages(await _table(session, DSK_ENTRY, DSK_COLUMNS))
        if not mounts and params.snmp_table != "ucd":
            mounts, usages = hr_storage_usages(await _table(session, HR_STORAGE_ENTRY, HR_STORAGE_COLUMNS))
        if not mounts:
            raise ProbeError(Reason.PROTOCOL, f"{session.label}: no dskTable or hrStorageTable disk rows "
                             "(add includeAllDisks or disk lines to snmpd.conf)")
    watched = {m.path for m in mounts
               if params.selects(Mount(m.path, m.device, m.fstype, readonly.get(m.path)))}
    return [u for u in usages if u.mount in watched]


async def run(ctx: ProbeContext, call: ProbeCall, params: DiskParams) -> Outcome:
    """Read the watched filesystems' usage by the configured transport and compare with the levels."""
    unreadable: Unreadable = {}
    if params.transport == "local":
        usages, unreadable = await read_local(params)
    elif params.transport == "ssh":
        usages = await read_ssh(call, params)
    else:
        usages = await read_snmp(call, params)
    return evaluate(params, usages, unreadable)


KIND = ProbeKind("disk", DiskParams, run, default_interval=600.0, threshold_notice=True,
                 summary="disk and inode usage per filesystem")
