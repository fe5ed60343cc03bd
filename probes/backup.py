"""``backup``: is the last backup there, fresh, complete, and are enough generations kept?

Contracts sell nightly backups in generations (001: daily 3/7/14, weekly 4, monthly 6, a
remote-site daily copy; 002: a daily full backup kept 7 generations, a 2nd-disk backup), taken
in the 0:00-6:00 window, and level 3 restores "the last backup taken". This check reads the
generations by one of three transports:

* ``files``: generations are files or directories matching ``pattern`` (a shell glob) in
  ``location``, read with a small POSIX shell script: on the host (its ``ssh:`` block), on a
  backup server (``where: server`` with its own ``server:`` SSH block) or on this machine
  (``where: local``). A generation's time comes from its name (``time_format``, strftime
  directives searched in the name, in the plan's time zone) or else its mtime; its size is the
  file's size or the sum of the file sizes in the directory (``size: false`` skips it: reading a
large tree costs one ``find`` over it per run).
* ``restic``: ``restic snapshots --json`` on the repository (locally with the password from a
  secret in the environment, or over SSH with a password file on the server); snapshot time and
  short id; size only where restic reports one (``summary``, restic 0.17+).
* ``heartbeat``: passive. The backup job posts its result when it finishes to
  ``POST /api/v1/heartbeat/{host}/{check}`` with the check's token (``{"status": "ok"|"critical",
  "message": "..."}``, see :mod:`probes.heartbeat`); each result seen is kept, so a failed
  result is a failed generation. Generations are not counted (a heartbeat cannot show them).

**The policy** is the plan (a named preset of the contract values, :data:`PRESETS`, chosen on
the check or as ``backup_plan`` in the host's, its groups' or the top-level ``defaults``),
with optional overrides:

* *late*: at the latest deadline passed (each day's ``window_end`` + ``grace``, in ``timezone``)
  the newest good generation must be younger than the schedule's period (1 day, 7 days, 1
  calendar month) counted back from that deadline. Every period missed, and every failed or
  truncated run since the newest good one, is one failure in a row.
* *truncated*: a generation smaller than ``min_size_ratio`` of the one before it is not good.
* *thinned*: fewer good generations than the plan keeps.

**Verdicts** (reason ``threshold``: customer notices like a full disk, never a ladder): OK;
WARNING for one failure (late, failed, truncated) or too few generations; CRITICAL when the
backup failed twice in a row, or no good generation exists at all, with ticket ``Ticket.BACKUP``
(the engine schedules a business-hours ticket). A backup that cannot be read (SSH refused,
location missing, restic error) is UNKNOWN: the operators' problem, not the customer's.
Passive checks count silence from the later of the newest good result and the moment this
daemon began judging them, as heartbeats do.

After each run the good generations are kept for the dispatch page and the incident report
(:mod:`monitord.shared.lastbackup`).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import signal
import time
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from monitord.shared import lastbackup
from monitord.shared.fields import ConfigPath, Duration, Port, SecretRef, StrictModel, TimeZoneName, format_duration
from monitord.shared.results import Outcome, ProbeError, Reason, Status, Ticket
from monitord.shared import kept
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind
from monitord.shared.power import ActionError

Schedule = Literal["daily", "weekly", "monthly"]


@dataclass(frozen=True, slots=True)
class Plan:
    """A contract's backup plan: how often, and how many generations are kept."""

    schedule: Schedule
    keep: int
    contract: str


PRESETS: dict[str, Plan] = {
    "D3": Plan("daily", 3, "001 backup-D3: daily, 3 generations"),
    "D7": Plan("daily", 7, "001 backup-D7: daily, 7 generations (1 week)"),
    "D14": Plan("daily", 14, "001 backup-D14: daily, 14 generations (2 weeks)"),
    "W4": Plan("weekly", 4, "001 backup-W4: weekly, 4 generations (1 month)"),
    "M6": Plan("monthly", 6, "001 backup-M6: monthly, 6 generations (6 months)"),
    "remote-daily": Plan("daily", 1, "001 backup-HKD: remote-site daily copy, 1 generation"),
    "daily-full": Plan("daily", 7, "002 backup service (daily): full backup once a day, 7 generations"),
    "second-disk": Plan("daily", 1, "002 2nd-disk backup: the last backup on the second disk"),
}
"""The contracts' plans by name (``backup_plan`` / ``plan``)."""

PlanName = Literal["D3", "D7", "D14", "W4", "M6", "remote-daily", "daily-full", "second-disk"]
HISTORY = 60
"""Results of a passive check kept (two months of nightly runs)."""
RESTIC_SIZE_KEYS = ("total_bytes_processed",)
_SAFE_GLOB = re.compile(r"^[A-Za-z0-9._+@%:,=*?\[\]!-]+$")
_STRFTIME_REGEX = {"Y": r"\d{4}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}", "S": r"\d{2}",
                   "y": r"\d{2}", "j": r"\d{3}", "s": r"\d+", "z": r"[+-]\d{4}", "%": "%"}


class BackupServer(StrictModel):
    """An SSH login on the backup server (``where: server``); host keys are always verified."""

    address: str = Field(min_length=1)
    port: Port = 22
    username: str = "root"
    key: SecretRef = Field(description="private key (file, env or credential)")
    known_hosts: ConfigPath = Path("/etc/monitord/known_hosts")
    os: Literal["linux"] = Field(default="linux", description="the listing runs in a POSIX shell there")


class BackupParams(CheckParams):
    """Where the generations are and which plan they follow; see the module docstring."""

    kind: Literal["backup"] = "backup"
    max_attempts: int | None = Field(default=1, ge=1, le=100)
    timeout: Duration | None = 60.0
    plan: PlanName | None = Field(default=None, description="default: backup_plan from the host's defaults cascade")
    schedule: Schedule | None = Field(default=None, description="override the plan's schedule")
    keep: int | None = Field(default=None, ge=1, le=10_000, description="override the generations the plan keeps")
    window_end: dt.time = Field(default=dt.time(6, 0), description="end of the nightly window (contract: 06:00)")
    grace: Duration = Field(default=3600.0, description="late after window_end plus this")
    timezone: TimeZoneName = "Asia/Tokyo"
    min_size_ratio: float = Field(default=0.5, ge=0, le=1,
                                  description="a generation smaller than this fraction of the previous is truncated")
    transport: Literal["files", "restic", "heartbeat"]
    where: Literal["host", "server", "local"] = Field(
        default="host", description="files/restic: on the host (its ssh: block), a backup server, or this machine")
    server: BackupServer | None = None
    location: str = Field(default="", description="files: the directory holding the generations; "
                                                  "heartbeat: where the job writes (for pages)")
    pattern: str = Field(default="*", description="files: shell glob of generation names")
    time_format: str | None = Field(default=None, description="files: strftime pattern in the names (else mtime)")
    size: bool = Field(default=True, description="files: measure sizes (a directory: the sum of its files)")
    repository: str = Field(default="", description="restic: the repository")
    password: SecretRef | None = Field(default=None, description="restic, local: the repository password")
    password_file: str | None = Field(default=None, description="restic over SSH: password file on that machine")
    snapshot_host: str | None = Field(default=None, description="restic: only snapshots of this hostname")
    restic_command: str = "restic"
    token: SecretRef | None = Field(default=None, description="heartbeat: the bearer token the backup job sends")

    @field_validator("pattern")
    @classmethod
    def _safe_glob(cls, value: str) -> str:
        if not _SAFE_GLOB.match(value):
            raise ValueError(f"pattern {value!r}: use a plain shell glob of a name (letters, digits, ._-+@%:,= * ? [ ])")
        return value

    @field_validator("time_format")
    @classmethod
    def _directives(cls, value: str | None) -> str | None:
        if value is None:
            return value
        unknown = sorted({d for d in re.findall(r"%(.)", value) if d not in _STRFTIME_REGEX})
        if unknown:
            raise ValueError(f"time_format: unsupported directive(s) {', '.join('%' + d for d in unknown)} "
                             f"(use {' '.join('%' + d for d in _STRFTIME_REGEX if d != '%')})")
        if not {"Y", "y", "s"} & set(re.findall(r"%(.)", value)):
            raise ValueError("time_format needs a year (%Y or %y) or %s")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "BackupParams":
        if self.host_critical or self.restart is not None:
            raise ValueError("a backup check never starts a ladder: host_critical and restart are not allowed")
        if self.where == "server" and self.server is None and self.transport != "heartbeat":
            raise ValueError("where: server needs a server: block (address, username, key, known_hosts)")
        if self.transport == "files" and not self.location.startswith("/"):
            raise ValueError("transport files needs an absolute location")
        if self.transport == "restic":
            if not self.repository:
                raise ValueError("transport restic needs a repository")
            if self.where == "local" and (self.password is None) == (self.password_file is None):
                raise ValueError("restic on this machine needs exactly one of password or password_file")
            if self.where != "local" and (self.password is not None or self.password_file is None):
                raise ValueError("restic over SSH needs password_file (a file on that machine), never password")
        if self.transport == "heartbeat" and self.token is None:
            raise ValueError("transport heartbeat needs a token")
        return self

    def needs(self) -> frozenset[str]:
        """The host's ``ssh:`` block when the generations are read on the host."""
        return frozenset({"ssh"}) if self.transport != "heartbeat" and self.where == "host" else frozenset()

    def inherit(self, setting) -> "BackupParams":
        """An unset ``plan`` from ``backup_plan``."""
        return self if self.plan is not None else self.model_copy(update={"plan": setting("backup_plan")})

    def problems(self) -> list[tuple[tuple, str]]:
        """No plan anywhere is a config error."""
        if self.plan is None and (self.schedule is None or self.keep is None):
            return [(("plan",), "no backup plan: set plan (e.g. D7) here or backup_plan in the host's, "
                                "a group's or the top-level defaults")]
        return []

    def heartbeat_token(self) -> SecretRef | None:
        """The token the backup job posts its result with (passive transport only)."""
        return self.token if self.transport == "heartbeat" else None

    def policy(self) -> "Policy":
        """The effective policy: the plan with this check's overrides."""
        plan = PRESETS[self.plan] if self.plan is not None else None
        return Policy(self.schedule or plan.schedule, self.keep or plan.keep,  # type: ignore[union-attr]
                      self.window_end, self.grace, zoneinfo.ZoneInfo(self.timezone), self.min_size_ratio)


# ---------------------------------------------------------------------------------------
# The calendar and the verdict (pure)


@dataclass(frozen=True, slots=True)
class Policy:
    """What the check holds the generations to."""

    schedule: Schedule
    keep: int
    window_end: dt.time
    grace: float
    zone: dt.tzinfo
    min_size_ratio: float = 0.5

    def last_deadline(self, now: float) -> dt.datetime:
        """The latest daily deadline (``window_end`` + ``grace``, local) at or before ``now``."""
        local = dt.datetime.fromtimestamp(now, self.zone)
        for days in range(0, 3):
            day = local.date() - dt.timedelta(days=days)
            deadline = dt.datetime.combine(day, self.window_end, self.zone) + dt.timedelta(seconds=self.grace)
            if deadline.timestamp() <= now:
                return deadline
        raise AssertionError("a deadline within three days")

    def back(self, deadline: dt.datetime, periods: int) -> float:
        """``periods`` schedule periods before ``deadline`` (calendar months for monthly)."""
        if self.schedule == "monthly":
            month = deadline.month - 1 - periods
            year, month = deadline.year + month // 12, month % 12 + 1
            day = min(deadline.day, calendar.monthrange(year, month)[1])
            return deadline.replace(year=year, month=month, day=day).timestamp()
        days = periods * (7 if self.schedule == "weekly" else 1)
        return (deadline - dt.timedelta(days=days)).timestamp()

    def stale_from(self, taken: float) -> float:
        """The first deadline at which a generation taken at ``taken`` no longer counts as fresh."""
        deadline = self.last_deadline(taken + 28 * 86400.0 if self.schedule == "monthly" else taken)
        while self.back(deadline, 1) < taken:
            deadline = dt.datetime.combine(deadline.date() + dt.timedelta(days=1), self.window_end, self.zone) \
                + dt.timedelta(seconds=self.grace)
        return deadline.timestamp()

    def describe(self) -> str:
        """e.g. ``daily by 06:00+1h``."""
        return f"{self.schedule} by {self.window_end:%H:%M}+{format_duration(self.grace)}"


@dataclass(frozen=True, slots=True)
class Generation:
    """One backup generation (or one reported run): when, what, how big, and whether it succeeded."""

    name: str
    at: float
    size: int | None = None
    ok: bool = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The check's outcome and the good generations to keep."""

    outcome: Outcome
    good: tuple[Generation, ...]


def periods_missed(policy: Policy, newest_good: float | None, now: float) -> int | None:
    """How many periods in a row have no good generation at the latest deadline passed (None: none ever)."""
    if newest_good is None:
        return None
    deadline = policy.last_deadline(now)
    missed = 0
    while newest_good <= policy.back(deadline, missed + 1):
        missed += 1
        if missed > 10_000:
            break
    return missed


def truncated(generations: list[Generation], ratio: float) -> set[int]:
    """Indexes (in time order) of generations smaller than ``ratio`` of the one before."""
    return {i for i in range(1, len(generations))
            if generations[i].size is not None and generations[i - 1].size is not None
            and generations[i].size < ratio * generations[i - 1].size}  # type: ignore[operator]


def evaluate(policy: Policy, generations: list[Generation], now: float, *, count: bool = True,
             since: float | None = None) -> Verdict:
    """Judge ``generations`` (any order) against ``policy`` at ``now``.

    ``count``: whether the transport can see how many generations are kept. ``since``: for
    passive checks, when judging began (silence before it is not counted).
    """
    ordered = sorted(generations, key=lambda g: g.at)
    cut = truncated(ordered, policy.min_size_ratio)
    bad_notes = {i: ("truncated" if i in cut else g.note or "failed")
                 for i, g in enumerate(ordered) if i in cut or not g.ok}
    good = [g for i, g in enumerate(ordered) if i not in bad_notes]
    newest = good[-1] if good else None
    baseline = max(newest.at if newest else float("-inf"), since if since is not None else float("-inf"))
    missed = periods_missed(policy, baseline if baseline != float("-inf") else None, now)
    failed_runs = sum(1 for i in bad_notes if newest is None or ordered[i].at > newest.at)
    in_a_row = None if missed is None else max(missed, failed_runs)
    values: dict[str, float] = {"generations": float(len(good)), "failures_in_a_row": float(in_a_row or 0)}
    if newest is not None:
        values["last_good_timestamp"] = newest.at
        values["last_good_age_seconds"] = max(0.0, now - newest.at)
    problems: list[str] = []
    status = Status.OK
    if in_a_row is None:
        status, problems = Status.CRITICAL, ["no good backup generation found"]
    elif in_a_row:
        status = Status.CRITICAL if in_a_row >= 2 else Status.WARNING
        what = "failed twice in a row" if in_a_row == 2 else f"failed {in_a_row} times in a row"
        problems.append(what if in_a_row >= 2 else "late or failed")
    latest_bad = max(bad_notes) if bad_notes else None
    if latest_bad is not None and (newest is None or ordered[latest_bad].at > newest.at):
        problems.append(f"latest run {ordered[latest_bad].name} {bad_notes[latest_bad]}")
    if count and len(good) < policy.keep:
        status = max(status, Status.WARNING)
        problems.append(f"thinned: {len(good)} of {policy.keep} generations kept")
    if newest is not None:
        tail = (f"newest good {newest.name} ({lastbackup.format_time(newest.at, policy.zone)})"
                + (f", {len(good)} generation{'s' if len(good) != 1 else ''}" if count else ""))
    else:
        tail = f"{len(ordered)} run{'s' if len(ordered) != 1 else ''} seen, none good" if ordered else "nothing found"
    summary = "; ".join(problems + [f"{tail}; {policy.describe()}"])
    reason = Reason.THRESHOLD if status is not Status.OK else Reason.NONE
    ticket = Ticket.BACKUP if status is Status.CRITICAL else None
    return Verdict(Outcome(status, summary, reason, values, ticket), tuple(good))


# ---------------------------------------------------------------------------------------
# Reading generations


def name_time(name: str, time_format: str, zone: dt.tzinfo) -> float | None:
    """The time ``time_format`` (strftime directives) finds in ``name``, local to ``zone``; None if absent."""
    regex = re.sub(r"%(.)|([^%]+)", lambda m: _STRFTIME_REGEX[m[1]] if m[1] else re.escape(m[2]), time_format)
    match = re.search(regex, name)
    if match is None:
        return None
    try:
        parsed = dt.datetime.strptime(match[0], time_format)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).timestamp()


_LIST_SCRIPT = r"""cd -- %(location)s 2>/dev/null || { echo "no such directory: "%(location)s >&2; exit 3; }
for f in %(pattern)s; do
  [ -e "$f" ] || continue
  s=-
  if [ %(size)s = yes ]; then
    if [ -d "$f" ]; then s=$(find "$f" -type f -printf '%%s\n' 2>/dev/null | awk '{ n += $1 } END { print n + 0 }')
    else s=$(stat -c %%s -- "$f"); fi
  fi
  printf '%%s\t%%s\t%%s\0' "$(stat -c %%Y -- "$f")" "${s:--}" "$f"
done
"""
"""Lists ``location/pattern``: ``MTIME<TAB>SIZE<TAB>NAME<NUL>`` per generation (``-``: no size)."""


def list_command(params: BackupParams) -> str:
    """The shell command that lists the generations."""
    script = _LIST_SCRIPT % {"location": shlex.quote(params.location), "pattern": params.pattern,
                             "size": "yes" if params.size else "no"}
    return "sh -c " + shlex.quote(script)


def parse_listing(output: str, params: BackupParams, zone: dt.tzinfo) -> list[Generation]:
    """Generations from :func:`list_command`'s output; names without the time are skipped."""
    generations = []
    for record in output.split("\0"):
        parts = record.strip("\n").split("\t", 2)
        if len(parts) != 3:
            continue
        mtime, size, name = parts
        at = name_time(name, params.time_format, zone) if params.time_format else float(mtime)
        if at is None:
            continue
        generations.append(Generation(name, at, None if size == "-" else int(size)))
    return generations


def restic_command(params: BackupParams) -> str:
    """``restic snapshots --json`` on the repository, read-only (no lock, no cache)."""
    words = [params.restic_command, "--no-lock", "--no-cache", "--repo", params.repository]
    if params.password_file:
        words += ["--password-file", params.password_file]
    words += ["snapshots", "--json"]
    if params.snapshot_host:
        words += ["--host", params.snapshot_host]
    return " ".join(shlex.quote(w) for w in words)


def parse_restic(output: str) -> list[Generation]:
    """Snapshots from ``restic snapshots --json``."""
    try:
        snapshots = json.loads(output)
    except ValueError:
        raise ProbeError(Reason.PROTOCOL, f"restic printed {output.strip()[:120]!r}, not JSON") from None
    if not isinstance(snapshots, list):
        raise ProbeError(Reason.PROTOCOL, "restic snapshots --json did not print a list")
    generations = []
    for snap in snapshots:
        try:
            stamp = re.sub(r"(\.\d{6})\d+", r"\1", str(snap["time"])).replace("Z", "+00:00")
            at = dt.datetime.fromisoformat(stamp).timestamp()
            name = str(snap.get("short_id") or snap["id"][:8])
        except (KeyError, TypeError, ValueError):
            raise ProbeError(Reason.PROTOCOL, f"restic snapshot without a time or id: {str(snap)[:120]}") from None
        summary = snap.get("summary") if isinstance(snap.get("summary"), dict) else {}
        size = next((summary[k] for k in RESTIC_SIZE_KEYS if isinstance(summary.get(k), int)), None)
        generations.append(Generation(name, at, size))
    return generations


async def _run_local(command: str, timeout: float, env: dict[str, str]) -> str:
    """Run ``command`` with ``sh -c`` here; its stdout, or a ProbeError with its stderr."""
    proc = await asyncio.create_subprocess_exec("sh", "-c", command, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ, **env}, start_new_session=True)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole session: a child holding the pipes too
        await proc.wait()
        raise
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise ProbeError(Reason.ERROR, f"{command.split()[0]} failed: {detail[0][:200]}")
    return out.decode(errors="replace")


async def _run(call: ProbeCall, params: BackupParams, command: str, env: dict[str, str]) -> tuple[str, str]:
    """Run ``command`` where the generations are; return its stdout and a label of that place."""
    budget = read_budget(call)
    if params.where == "local":
        return await _run_local(command, budget, env), "local"
    from remediation.ssh import DEFAULT_CONNECT_TIMEOUT, SshClient  # imports the config: not at module load

    ssh, address = (params.server, params.server.address) if params.server is not None else (call.ssh, call.address)
    client = SshClient.from_config(address, ssh, connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, budget),
                                   command_timeout=budget)
    result = await client.run(command)
    if not result.ok:
        raise ProbeError(Reason.ERROR, f"ssh {client.target.host_label}: {result.describe()}")
    return result.stdout, client.target.host_label


def read_budget(call: ProbeCall) -> float:
    """How long reading may take: less than the runner's timeout, so that a slow read is ours to
    report (UNKNOWN), never the runner's time-out (a critical failure)."""
    return call.timeout * 0.8


async def read_generations(call: ProbeCall, params: BackupParams, zone: dt.tzinfo) -> tuple[list[Generation], str]:
    """The generations of a ``files`` or ``restic`` check and where they were read."""
    if params.transport == "files":
        output, where = await _run(call, params, list_command(params), {})
        return parse_listing(output, params, zone), f"{where}:{params.location}"
    env = {"RESTIC_PASSWORD": params.password.read()} if params.password is not None else {}
    output, where = await _run(call, params, restic_command(params), env)
    return parse_restic(output), f"{where}:{params.repository}"


def passive_runs(directory: Path, beat: Any, params: BackupParams) -> list[Generation]:
    """The results the backup job posted, kept in ``directory`` (the last one added if new)."""
    path = directory / "runs.json"
    runs = kept.read_json(path).get("runs", [])
    if beat is not None and not any(r.get("at") == beat.at for r in runs):
        runs = (runs + [{"at": beat.at, "ok": beat.status is Status.OK, "message": beat.message}])[-HISTORY:]
        kept.write_json(path, {"runs": runs})
    return [Generation(r.get("message") or f"run of {dt.datetime.fromtimestamp(r['at'], dt.timezone.utc):%F}",
                       r["at"], None, bool(r.get("ok")), "reported failure") for r in runs]


async def run(ctx: ProbeContext, call: ProbeCall, params: BackupParams) -> Outcome:
    """Read the generations, judge them, keep the good ones for pages and reports."""
    policy = params.policy()
    directory = ctx.check_dir("backup", call)
    if params.transport == "heartbeat":
        from probes.heartbeat import receiver_of

        receiver = await receiver_of(ctx)
        if receiver is None:
            return Outcome(Status.UNKNOWN, "backup results are received only by the running daemon", Reason.ERROR)
        now = receiver.clock.time()
        runs = passive_runs(directory, receiver.last(f"{call.host}/{call.check}"), params)
        verdict = evaluate(policy, runs, now, count=False, since=receiver.judging_since(f"{call.host}/{call.check}"))
        location = params.location or "reported by the backup job"
    else:
        now = time.time()
        try:
            async with asyncio.timeout(read_budget(call)):
                generations, location = await read_generations(call, params, policy.zone)
        except (ProbeError, ActionError, LookupError, OSError, TimeoutError) as exc:
            why = getattr(exc, "summary", None) or str(exc) or f"no answer within {format_duration(read_budget(call))}"
            return Outcome(Status.UNKNOWN, f"cannot read the backups: {why}", Reason.ERROR)
        verdict = evaluate(policy, generations, now)
    lastbackup.write_record(directory, location, now, [
        {"name": g.name, "at": g.at, "size": g.size, "stale_from": policy.stale_from(g.at)}
        for g in verdict.good[-HISTORY:]])
    return verdict.outcome


KIND = ProbeKind(
    "backup", BackupParams, run, default_interval=600.0, threshold_notice=True,
    summary="backups taken on schedule, complete and kept in generations (files over SSH, restic, or passive)",
)
