"""The ``backup`` kind: the contract calendar and verdicts on fixed times (no clock, no sleeping),
config validation, then real peers: generation directories over a real sshd, a real restic
repository, and backup results posted by a real HTTP client to the heartbeat receiver."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import zoneinfo
from pathlib import Path

import aiohttp
import pytest

from monitord.shared import lastbackup
from monitord.config import ConfigError, parse_config
from monitord.shared.fields import SecretRef
from monitord.edge.listener import Listener
from monitord.edge.metrics import Metrics
from monitord.shared.results import Reason, Status, Ticket
from monitord.run.runner import run_probe
from monitord.records.state import SQLiteStore
from probes import REGISTRY, backup, heartbeat
from probes.backup import BackupParams, Generation, Policy, evaluate, name_time, parse_restic, periods_missed
from monitord.shared.probe import ProbeCall, ProbeContext
from monitord.shared.results import ProbeError
from tests.fakeclock import FakeClock
from tests.test_engine_notices import CONFIG as NOTICES_CONFIG, make_engine
from tests.ssh_peer import SshHost
from tests.support import free_port, need_binary

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
DAILY7 = Policy("daily", 7, dt.time(6, 0), 3600.0, TOKYO)
DAY = 86400.0


def jst(day: int, hh: int = 0, mm: int = 0, month: int = 11, year: int = 2026) -> float:
    """Epoch seconds of YYYY-MM-DD hh:mm in Tokyo."""
    return dt.datetime(year, month, day, hh, mm, tzinfo=TOKYO).timestamp()


def nightly(last_day: int, count: int, hh: int = 2, size: int = 1000) -> list[Generation]:
    """``count`` generations taken at hh:00 on the days up to ``last_day`` of November 2026."""
    return [Generation(f"web1-{d:02d}", jst(d, hh), size) for d in range(last_day - count + 1, last_day + 1)]


# ---------------------------------------------------------------------------------------
# The calendar


@pytest.mark.parametrize("now,deadline", [
    (jst(25, 7, 0), jst(25, 7, 0)),    # 06:00 + 1h grace: the deadline itself
    (jst(25, 6, 59), jst(24, 7, 0)),   # just before it: yesterday's
    (jst(25, 23, 0), jst(25, 7, 0)),
    (jst(1, 3, 0, month=12), jst(30, 7, 0)),  # across a month end
])
def test_the_latest_deadline_is_window_end_plus_grace_in_local_time(now, deadline):
    assert DAILY7.last_deadline(now).timestamp() == deadline


def test_a_daily_backup_is_late_after_0600_plus_grace_not_before():
    taken = jst(24, 2)  # last night's is missing: the newest is the night before
    assert periods_missed(DAILY7, taken, jst(25, 6, 59)) == 0
    assert periods_missed(DAILY7, taken, jst(25, 7, 0)) == 1
    assert periods_missed(DAILY7, taken, jst(26, 7, 0)) == 2
    assert periods_missed(DAILY7, jst(24, 23, 55), jst(25, 7, 0)) == 0  # started before midnight: still last night's
    assert periods_missed(DAILY7, None, jst(25, 7, 0)) is None


def test_weekly_and_monthly_periods_count_back_from_the_deadline():
    weekly = Policy("weekly", 4, dt.time(6, 0), 3600.0, TOKYO)
    sunday = jst(22, 2)  # 2026-11-22 is a Sunday
    assert periods_missed(weekly, sunday, jst(29, 6, 59)) == 0
    assert periods_missed(weekly, sunday, jst(29, 7, 0)) == 1
    monthly = Policy("monthly", 6, dt.time(6, 0), 3600.0, TOKYO)
    end_of_january = jst(31, 2, month=1)
    assert periods_missed(monthly, end_of_january, jst(28, 7, 0, month=2)) == 0  # Feb 28 - 1 month = Jan 28
    assert periods_missed(monthly, end_of_january, jst(3, 7, 0, month=3)) == 1
    assert periods_missed(monthly, jst(3, 2, month=1), jst(3, 7, 0, month=3)) == 2


# ---------------------------------------------------------------------------------------
# Verdicts


def test_fresh_backups_with_every_generation_are_ok():
    verdict = evaluate(DAILY7, nightly(25, 7), jst(25, 10))
    assert verdict.outcome.status is Status.OK and verdict.outcome.reason is Reason.NONE
    assert verdict.outcome.values["generations"] == 7
    assert verdict.outcome.values["last_good_timestamp"] == jst(25, 2)
    assert "newest good web1-25 (2026-11-25 02:00 JST), 7 generations; daily by 06:00+1h" in verdict.outcome.summary


def test_one_missed_night_is_a_warning_two_are_critical_with_a_ticket():
    late = evaluate(DAILY7, nightly(24, 7), jst(25, 7, 5)).outcome
    assert (late.status, late.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert late.summary.startswith("late or failed; newest good web1-24")
    assert late.ticket is None and "backup_ticket" not in late.values
    twice = evaluate(DAILY7, nightly(23, 7), jst(25, 7, 5)).outcome
    assert (twice.status, twice.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert twice.summary.startswith("failed twice in a row")
    assert twice.ticket is Ticket.BACKUP and twice.values["failures_in_a_row"] == 2
    assert "backup_ticket" not in twice.values  # a signal, not a measured value: never a metric


def test_a_stopped_job_is_critical_whatever_the_daemon_saw_before():
    month_old = evaluate(DAILY7, nightly(25, 7), jst(25, 10, month=12)).outcome
    assert month_old.status is Status.CRITICAL and "failed 30 times in a row" in month_old.summary
    nothing = evaluate(DAILY7, [], jst(25, 10)).outcome
    assert nothing.status is Status.CRITICAL and nothing.ticket is Ticket.BACKUP
    assert nothing.summary.startswith("no good backup generation found; thinned: 0 of 7")


def test_thinned_generations_are_a_warning_even_when_fresh():
    outcome = evaluate(DAILY7, nightly(25, 4), jst(25, 10)).outcome
    assert (outcome.status, outcome.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert outcome.summary.startswith("thinned: 4 of 7 generations kept")


def test_a_truncated_newest_generation_is_a_failed_backup():
    gens = nightly(25, 7)
    gens[-1] = Generation("web1-25", jst(25, 2), 400)  # less than half of the 1000 before
    outcome = evaluate(DAILY7, gens, jst(25, 10)).outcome
    assert outcome.status is Status.WARNING
    assert "latest run web1-25 truncated" in outcome.summary
    assert "thinned: 6 of 7" in outcome.summary  # the truncated one is not a good generation
    assert outcome.values["last_good_timestamp"] == jst(24, 2)
    # truncated tonight and nothing the night before: twice in a row
    gens = nightly(23, 6) + [Generation("web1-25", jst(25, 2), 10)]
    assert evaluate(DAILY7, gens, jst(25, 10)).outcome.status is Status.CRITICAL
    # a smaller one within the ratio is fine
    assert evaluate(DAILY7, nightly(24, 6) + [Generation("web1-25", jst(25, 2), 600)],
                    jst(25, 10)).outcome.status is Status.OK


def test_late_and_thinned_at_once_names_both():
    outcome = evaluate(DAILY7, nightly(24, 3), jst(25, 8)).outcome
    assert outcome.status is Status.WARNING
    assert outcome.summary.startswith("late or failed; thinned: 3 of 7 generations kept")


def test_passive_results_failed_twice_in_a_row_and_silence_counted_from_judging():
    since = jst(20, 12)
    ok = Generation("nightly", jst(22, 3), ok=True)
    failed = [Generation("nightly", jst(23, 3), ok=False, note="reported failure"),
              Generation("nightly", jst(24, 3), ok=False, note="reported failure")]
    once = evaluate(DAILY7, [ok, failed[0]], jst(23, 4), count=False, since=since).outcome
    assert once.status is Status.WARNING and "latest run nightly reported failure" in once.summary  # before the deadline
    twice = evaluate(DAILY7, [ok] + failed, jst(24, 4), count=False, since=since).outcome
    assert twice.status is Status.CRITICAL and twice.ticket is Ticket.BACKUP
    assert "thinned" not in twice.summary  # a heartbeat cannot count generations
    posted_before_judging = evaluate(DAILY7, [failed[0]], jst(23, 4), count=False, since=jst(23, 3, 30)).outcome
    assert posted_before_judging.status is Status.WARNING  # a reported failure is a fact, whenever judging began
    waiting = evaluate(DAILY7, [], jst(21, 6), count=False, since=since).outcome
    assert waiting.status is Status.OK  # nothing yet, but no deadline passed since judging began
    # the first period was partly before judging began (a result then was not seen): benefit of the doubt
    assert evaluate(DAILY7, [], jst(22, 7, 30), count=False, since=since).outcome.status is Status.WARNING
    silent = evaluate(DAILY7, [], jst(23, 7, 30), count=False, since=since).outcome
    assert silent.status is Status.CRITICAL and silent.summary.startswith("failed twice in a row; nothing found")


def test_times_from_names_and_from_restic():
    assert name_time("web1-20261125-0200.tar.gz", "%Y%m%d-%H%M", TOKYO) == jst(25, 2)
    assert name_time("daily.2026-11-25", "%Y-%m-%d", TOKYO) == jst(25)
    assert name_time("web1-latest", "%Y%m%d-%H%M", TOKYO) is None
    assert name_time("web1-20261399-0200", "%Y%m%d-%H%M", TOKYO) is None
    snaps = parse_restic('[{"time": "2026-11-25T02:00:00.123456789+09:00", "id": "abcdef0123", "short_id": "abcdef01"},'
                         ' {"time": "2026-11-24T17:00:00Z", "id": "0123456789", "summary": {"total_bytes_processed": 5}}]')
    assert snaps == [Generation("abcdef01", jst(25, 2) + 0.123456, None), Generation("01234567", jst(25, 2), 5)]
    with pytest.raises(ProbeError, match="not JSON"):
        parse_restic("Fatal: wrong password or no key found")
    with pytest.raises(ProbeError, match="without a time"):
        parse_restic('[{"id": "x"}]')


def test_last_good_before_a_moment_and_staleness():
    assert DAILY7.stale_from(jst(25, 2)) == jst(26, 7) == DAILY7.stale_from(jst(25, 6, 59))
    assert DAILY7.stale_from(jst(24, 23, 55)) == jst(26, 7)  # started before midnight: counts for the 25th
    assert Policy("monthly", 6, dt.time(6), 3600.0, TOKYO).stale_from(jst(31, 2, month=1)) == jst(1, 7, month=3)
    record = {"location": "backup1:/srv", "checked_at": jst(25, 10), "generations": [
        {"name": "g24", "at": jst(24, 2), "size": 2048, "stale_from": jst(25, 7)},
        {"name": "g25", "at": jst(25, 2), "stale_from": jst(26, 7)}]}
    now = lastbackup.last_good("backup", record)
    assert (now.generation, now.at, now.size, now.stale) == ("g25", jst(25, 2), None, False)
    before = lastbackup.last_good("backup", record, before=jst(24, 23))
    assert (before.generation, before.size, before.stale) == ("g24", 2048, False)
    assert not lastbackup.last_good("backup", record, before=jst(26, 6, 59)).stale
    stale = lastbackup.last_good("backup", record, before=jst(26, 7))  # 06:00 + 1h the next day
    assert stale.stale and stale.describe(TOKYO).endswith("STALE: older than its schedule allows")
    assert lastbackup.last_good("backup", record, before=jst(20)).describe(TOKYO) == \
        "backup: no good backup known at backup1:/srv"
    assert lastbackup.last_good("backup", {}).describe(TOKYO) == \
        "backup: last good backup unknown (the backup check has not run yet)"
    assert before.describe(TOKYO) == "backup: last good backup 2026-11-24 02:00 JST, generation g24 at backup1:/srv, 2.0 KiB"


# ---------------------------------------------------------------------------------------
# Config


HOST = """
defaults: {{backup_plan: D7}}
hosts:
  web1:
    address: 127.0.0.1
    ssh: {{username: root, key: {{env: K}}}}
    checks:
      backup:
{check}
"""


def config_error(check: str, text: str = HOST) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text.format(check=check))
    return info.value.problems


def test_presets_cascade_and_overrides_win():
    config = parse_config(HOST.format(check="        {transport: files, location: /srv/backup, keep: 3}"))
    policy = config.checks()[0].params.policy()
    assert (policy.schedule, policy.keep, policy.window_end, policy.grace) == ("daily", 3, dt.time(6), 3600.0)
    config = parse_config(HOST.format(check="        {transport: files, location: /srv/backup, plan: M6}"))
    assert config.checks()[0].params.policy().schedule == "monthly"
    assert config.checks()[0].max_attempts == 1 and config.checks()[0].interval == 600
    assert REGISTRY["backup"] is backup.KIND


@pytest.mark.parametrize("check,problem", [
    ("        {transport: files, location: /srv, plan: D5}",
     "hosts.web1.checks.backup.plan: input should be 'D3', 'D7', 'D14', 'W4', 'M6', 'remote-daily', 'daily-full' or "
     "'second-disk' (line 9)"),
    ("        {transport: files, location: srv}",
     "hosts.web1.checks.backup.backup: transport files needs an absolute location (line 9)"),
    ("        {transport: files, location: /srv, pattern: 'a;rm -rf'}",
     "hosts.web1.checks.backup.pattern: pattern 'a;rm -rf': use a plain shell glob of a name "
     "(letters, digits, ._-+@%:,= * ? [ ]) (line 9)"),
    ("        {transport: files, location: /srv, time_format: '%H%M'}",
     "hosts.web1.checks.backup.time_format: time_format needs a year (%Y or %y) or %s (line 9)"),
    ("        {transport: files, location: /srv, time_format: '%Y%b'}",
     "hosts.web1.checks.backup.time_format: time_format: unsupported directive(s) %b (use %Y %m %d %H %M %S %y %j "
     "%s %z) (line 9)"),
    ("        {transport: restic, repository: /r, where: local}",
     "hosts.web1.checks.backup.backup: restic on this machine needs exactly one of password or password_file (line 9)"),
    ("        {transport: restic, repository: /r, password: {env: P}}",
     "hosts.web1.checks.backup.backup: restic over SSH needs password_file (a file on that machine), never password "
     "(line 9)"),
    ("        {transport: files, location: /srv, where: server}",
     "hosts.web1.checks.backup.backup: where: server needs a server: block (address, username, key, known_hosts) "
     "(line 9)"),
    ("        {transport: heartbeat}", "hosts.web1.checks.backup.backup: transport heartbeat needs a token (line 9)"),
    ("        {transport: heartbeat, token: {env: T}, restart: {unit: bacula}}",
     "hosts.web1.checks.backup.backup: a backup check never starts a ladder: host_critical and restart are not "
     "allowed (line 9)"),
    ("        {transport: files, location: /srv, timezone: Mars/Olympus}",
     "hosts.web1.checks.backup.timezone: unknown time zone 'Mars/Olympus' (line 9)"),
])
def test_bad_backup_checks_are_config_errors_with_lines(check, problem):
    assert config_error(check) == [problem]


def test_no_plan_anywhere_and_a_missing_ssh_block_are_reported():
    text = HOST.replace("defaults: {{backup_plan: D7}}\n", "").replace("    ssh: {{username: root, key: {{env: K}}}}\n", "")
    assert config_error("        {transport: files, location: /srv}", text) == [
        "hosts.web1.checks.backup.kind: kind backup needs a ssh: block on the host (line 7)",
        "hosts.web1.checks.backup.plan: no backup plan: set plan (e.g. D7) here or backup_plan in the host's, a "
        "group's or the top-level defaults (line 7)",
    ]
    # read on this machine or posted: no ssh block needed
    parse_config(text.format(check="        {transport: heartbeat, token: {env: T}, plan: D3}"))


def test_the_shipped_example_config_has_backup_checks():
    from monitord.config import load_config

    config = load_config(Path(__file__).parent.parent / "config" / "monitord.example.yaml")
    kinds = {spec.params.transport for spec in config.checks() if spec.kind is backup.KIND}
    assert kinds == {"files", "restic", "heartbeat"}


# ---------------------------------------------------------------------------------------
# Files over a real sshd


def make_generations(root: Path, times: list[float], sizes: list[int], named: bool) -> None:
    """Generation directories ``web1-YYYYmmdd-HHMM`` (named) or ``gen-N`` with that mtime, each
    holding one file of the given size, readable by the SSH test user."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for i, (at, size) in enumerate(zip(times, sizes)):
        name = dt.datetime.fromtimestamp(at, TOKYO).strftime("web1-%Y%m%d-%H%M") if named else f"gen-{i}"
        gen = root / name
        gen.mkdir()
        (gen / "data.tar").write_bytes(b"x" * size)
        os.chmod(gen, 0o755)
        os.chmod(gen / "data.tar", 0o644)
        os.utime(gen, (at, at))
    (root / "README").write_text("not a generation\n")


def nights_back(count: int, skip: int = 0) -> list[float]:
    """``count`` nightly times (05:00 local, inside the window), newest first skipping ``skip``
    nights, counted back from the latest deadline passed now."""
    deadline = DAILY7.last_deadline(dt.datetime.now(TOKYO).timestamp())
    base = deadline.replace(hour=5, minute=0)
    return [(base - dt.timedelta(days=k)).timestamp() for k in range(skip, skip + count)][::-1]


def files_params(location: Path, **extra) -> BackupParams:
    fields = dict(transport="files", location=str(location), plan="D7") | extra
    return BackupParams(**fields)


async def probe(params: BackupParams, host: SshHost | None, ctx: ProbeContext, address: str = "127.0.0.1"):
    call = ProbeCall("web1", address, 30.0, "backup", ssh=host.config() if host else None)
    return await run_probe(backup.KIND, ctx, call, params, 0.0)


@pytest.mark.integration
@pytest.mark.parametrize("case,times,sizes,status,summary", [
    ("fresh", nights_back(7), [1000] * 7, Status.OK, "7 generations; daily by 06:00+1h"),
    ("late", nights_back(7, skip=1), [1000] * 7, Status.WARNING, "late or failed; newest good web1-"),
    ("twice", nights_back(7, skip=2), [1000] * 7, Status.CRITICAL, "failed twice in a row; newest good web1-"),
    ("thinned", nights_back(3), [1000] * 3, Status.WARNING, "thinned: 3 of 7 generations kept"),
    ("truncated", nights_back(7), [1000] * 6 + [100], Status.WARNING, "truncated; thinned: 6 of 7"),
])
async def test_generation_directories_over_ssh(ssh_host: SshHost, tmp_path, case, times, sizes, status, summary):
    root = ssh_host.state / f"backups-{case}"
    make_generations(root, times, sizes, named=True)
    ctx = ProbeContext(state_dir=tmp_path)
    try:
        result = await probe(files_params(root, pattern="web1-*", time_format="%Y%m%d-%H%M"), ssh_host, ctx)
    finally:
        await ctx.aclose()
    assert result.status is status, result.summary
    assert summary in result.summary
    assert result.reason is (Reason.NONE if status is Status.OK else Reason.THRESHOLD)
    record = lastbackup.last_good("backup", kept_record(tmp_path))
    good = [t for t, s in zip(times, sizes) if s >= 500]
    assert record.at == good[-1] and record.location == f"[127.0.0.1]:{ssh_host.port}:{root}"
    assert record.size == 1000  # the bytes of the files in the generation directory


def kept_record(state_dir: Path, check: str = "backup") -> dict:
    from monitord.shared import kept

    return kept.read_json(lastbackup.record_path(state_dir, "web1", check))


@pytest.mark.integration
async def test_mtime_generations_on_a_backup_server_and_unreadable_backups(ssh_host: SshHost, tmp_path):
    root = ssh_host.state / "second-disk"
    make_generations(root, nights_back(1), [10], named=False)
    server = backup.BackupServer(address="127.0.0.1", port=ssh_host.port, username=ssh_host.user,
                                 key=SecretRef(file=ssh_host.client_key), known_hosts=ssh_host.known_hosts)
    ctx = ProbeContext(state_dir=tmp_path)
    try:
        # the host itself (192.0.2.1, no ssh) is not contacted: the server is
        params = files_params(root, plan="second-disk", pattern="gen-*", where="server", server=server)
        result = await probe(params, None, ctx, address="192.0.2.1")
        assert result.status is Status.OK, result.summary
        assert "newest good gen-0" in result.summary and "1 generation;" in result.summary
        missing = await probe(files_params(root / "nope", where="server", server=server), None, ctx)
        assert (missing.status, missing.reason) == (Status.UNKNOWN, Reason.ERROR)
        assert "no such directory" in missing.summary
        wrong_key = server.model_copy(update={"key": SecretRef(file=tmp_path / "absent-key")})
        refused = await probe(files_params(root, where="server", server=wrong_key), None, ctx)
        assert refused.status is Status.UNKNOWN and refused.summary.startswith("cannot read the backups:")
        closed = server.model_copy(update={"port": free_port()})
        down = await probe(files_params(root, where="server", server=closed), None, ctx)
        assert down.status is Status.UNKNOWN  # never a failure that could start a ladder
    finally:
        await ctx.aclose()


# ---------------------------------------------------------------------------------------
# A real restic repository


def restic(repo: Path, password_file: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo.parent), "RESTIC_PASSWORD_FILE": str(password_file)}
    done = subprocess.run(["restic", "--no-cache", "--repo", str(repo), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def restic_repo(ssh_host: SshHost):
    """A repository with 4 nightly snapshots (chosen times), the second oldest forgotten."""
    need_binary("restic")
    root = ssh_host.state / "restic"
    data = root / "data"
    data.mkdir(parents=True)
    (data / "file").write_text("payload\n")
    password = root / "password"
    password.write_text("restic-test-pw\n")
    restic(root / "repo", password, "init")
    ids = []
    for at in nights_back(4):
        stamp = dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")  # restic reads local time
        out = restic(root / "repo", password, "backup", "--json", "--host", "web1", "--time", stamp, str(data))
        ids.append(next(line for line in out.splitlines() if '"snapshot_id"' in line))
    snapshots = restic(root / "repo", password, "snapshots", "--json")
    import json

    listed = sorted(json.loads(snapshots), key=lambda s: s["time"])
    restic(root / "repo", password, "forget", listed[1]["id"])
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    yield root / "repo", password, [s["short_id"] for s in listed]
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
async def test_restic_snapshots_taken_and_forgotten(restic_repo, ssh_host: SshHost, tmp_path, monkeypatch):
    repo, password, short_ids = restic_repo
    ctx = ProbeContext(state_dir=tmp_path)
    try:
        monkeypatch.setenv("RESTIC_TEST_PW", "restic-test-pw")
        local = BackupParams(transport="restic", where="local", repository=str(repo), plan="D3",
                             password=SecretRef(env="RESTIC_TEST_PW"), snapshot_host="web1")
        result = await probe(local, None, ctx)
        assert result.status is Status.OK, result.summary  # 3 left of 4, and D3 keeps 3
        assert f"newest good {short_ids[-1]}" in result.summary and "3 generations" in result.summary
        thinned = await probe(local.model_copy(update={"plan": "D7"}), None, ctx)
        assert thinned.status is Status.WARNING and "thinned: 3 of 7" in thinned.summary
        other_host = await probe(local.model_copy(update={"snapshot_host": "db1"}), None, ctx)
        assert other_host.status is Status.CRITICAL and "no good backup generation found" in other_host.summary
        kept = lastbackup.last_good("backup", kept_record(tmp_path))
        assert kept.at is None and kept.checked_at is not None  # the last run found none: said plainly

        over_ssh = BackupParams(transport="restic", repository=str(repo), plan="D3", password_file=str(password))
        remote = await probe(over_ssh, ssh_host, ctx)
        assert remote.status is Status.OK, remote.summary
        assert lastbackup.last_good("backup", kept_record(tmp_path)).generation == short_ids[-1]
        monkeypatch.setenv("RESTIC_TEST_PW", "s3cr3t-not-the-pw")
        wrong = await probe(local, None, ctx)
        assert (wrong.status, wrong.reason) == (Status.UNKNOWN, Reason.ERROR)
        assert wrong.summary.startswith("cannot read the backups: restic failed: ")
        assert "s3cr3t" not in wrong.summary  # the password went by the environment, never the command line
    finally:
        await ctx.aclose()


async def test_a_listing_that_hangs_is_unknown_not_a_failure(tmp_path):
    slow = tmp_path / "slow-restic"
    slow.write_text("#!/bin/sh\nexec sleep 60\n")
    slow.chmod(0o755)
    params = BackupParams(transport="restic", where="local", repository=str(tmp_path), plan="D3",
                          password_file=str(slow), restic_command=str(slow))
    ctx = ProbeContext(state_dir=tmp_path)
    try:
        call = ProbeCall("web1", "127.0.0.1", 2.5, "backup")
        result = await run_probe(backup.KIND, ctx, call, params, 0.0)
    finally:
        await ctx.aclose()
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert result.summary == "cannot read the backups: no answer within 2s"


# ---------------------------------------------------------------------------------------
# Passive: results posted by a real HTTP client


PASSIVE = """
hosts:
  web1:
    address: 127.0.0.1
    checks:
      alive: {kind: heartbeat, token: {env: ALIVE_TOKEN}, expect_every: 5m}
      backup: {transport: heartbeat, token: {env: BACKUP_TOKEN}, plan: daily-full, location: backup1:/srv/web1}
      files: {kind: backup, transport: files, where: local, location: /srv, plan: D7}
"""


@pytest.fixture
async def receiver_app(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIVE_TOKEN", "alive-token")
    monkeypatch.setenv("BACKUP_TOKEN", "backup-token")
    config = parse_config(PASSIVE)
    clock = FakeClock(jst(20, 12))
    store = SQLiteStore(tmp_path / "state.db")
    receiver = await heartbeat.Receiver.open(store, clock, lambda: config)
    listener = Listener(Metrics())  # the daemon's own hardened HTTP listener
    listener.app.router.add_post(heartbeat.ROUTE, receiver.handle)
    listener.app.router.add_post(heartbeat.CHECK_ROUTE, receiver.handle)
    await listener.start("127.0.0.1", 0)
    ctx = ProbeContext(state_dir=tmp_path / "probes")
    await heartbeat.install(ctx, receiver)
    yield f"http://127.0.0.1:{listener.port}", clock, ctx, config, tmp_path / "probes"
    await ctx.aclose()
    await listener.stop()
    await store.close()


async def post(session: aiohttp.ClientSession, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, (await response.json() if response.status != 204 else {})


async def test_backup_results_posted_over_http(receiver_app):
    base, clock, ctx, config, state = receiver_app
    spec = next(s for s in config.checks() if s.name == "backup")

    async def judge():
        return await run_probe(backup.KIND, ctx, spec.call(), spec.params, clock.time())

    async with aiohttp.ClientSession() as session:
        assert (await judge()).status is Status.OK  # judging begins: no deadline passed yet
        # liveness heartbeats and the wrong token are not backup results
        assert (await post(session, f"{base}/api/v1/heartbeat/web1", "alive-token"))[0] == 204
        assert (await post(session, f"{base}/api/v1/heartbeat/web1/backup", "alive-token"))[0] == 401
        status, body = await post(session, f"{base}/api/v1/heartbeat/web1/files", "backup-token")
        assert status == 401 and body == {"error": "missing or wrong bearer token"}  # takes no posted results
        assert (await post(session, f"{base}/api/v1/heartbeat/web9/backup", "backup-token"))[0] == 401
        assert (await post(session, f"{base}/api/v1/heartbeat/web1/alive", "alive-token"))[0] == 204
        status, body = await post(session, f"{base}/api/v1/heartbeat/web1/backup", "backup-token", {"size": 5})
        assert status == 400 and "unknown key(s) size" in body["error"]

        await clock.advance(jst(21, 3) - clock.time())
        done = {"status": "ok", "message": "full 2026-11-21"}
        assert (await post(session, f"{base}/api/v1/heartbeat/web1/backup", "backup-token", done))[0] == 204
        ok = await judge()
        assert ok.status is Status.OK and "newest good full 2026-11-21" in ok.summary
        assert "thinned" not in ok.summary

        await clock.advance(jst(22, 3) - clock.time())
        failed = {"status": "critical", "message": "full 2026-11-22: disk full"}
        assert (await post(session, f"{base}/api/v1/heartbeat/web1/backup", "backup-token", failed))[0] == 204
        once = await judge()
        assert (once.status, once.reason) == (Status.WARNING, Reason.THRESHOLD)
        assert "latest run full 2026-11-22: disk full reported failure" in once.summary

        await clock.advance(jst(23, 7, 5) - clock.time())  # no result at all last night: twice in a row
        twice = await judge()
        assert twice.status is Status.CRITICAL and twice.ticket is Ticket.BACKUP
    last = lastbackup.last_good("backup", kept_record(state))
    assert (last.generation, last.at, last.location) == ("full 2026-11-21", jst(21, 3), "backup1:/srv/web1")
    assert last.stale  # the newest good one is older than the plan allows


# ---------------------------------------------------------------------------------------
# Notices, tickets and the dispatch page (the engine on a fake clock, real store and outbox)


ENGINE_CONFIG = NOTICES_CONFIG.split("hosts:\n")[0] + """hosts:
  web1:
    address: 127.0.0.1
    customer: acme
    instructions: {backup_contract: true}
    checks:
      ping: {}
      backup: {transport: files, where: local, location: /srv/backup/web1, plan: D7}
  web2:
    address: 127.0.0.1
    customer: acme
    instructions: {backup_contract: true}
    checks:
      ping: {}
  web3:
    address: 127.0.0.1
    checks:
      ping: {}
"""


@pytest.fixture
async def engine(tmp_path):
    made = make_engine(tmp_path, ENGINE_CONFIG)
    yield made
    await made[1].close()


async def messages(store) -> list[dict]:
    import json

    return [json.loads(item.message) for item in await store.outbox.items()]


async def notify(engine, spec, event, result, incident_id):
    import asyncio

    await engine.notify(spec, event, result, incident_id=incident_id)
    await asyncio.sleep(0)
    await engine.idle()


async def test_a_late_backup_is_a_customer_notice_and_operator_warning_and_twice_a_business_hours_ticket(engine):
    from monitord.run.checkstate import Event
    from monitord.shared.results import Result

    engine, store, specs = engine
    spec = next(s for s in engine.config.checks() if s.id == "web1/backup")
    late = Result(Status.WARNING, Reason.THRESHOLD, "late or failed; newest good web1-24", 0.1, jst(25, 7, 5))
    await notify(engine, spec, Event.CONFIRMED, late, 7)
    assert [m["summary"] for m in await messages(store)] == ["【容量警告】web1: backup: late or failed; newest good web1-24",
                                                             "web1/backup: late or failed; newest good web1-24"]
    assert (await messages(store))[1]["severity"] == "warning"  # operations hear of it too
    twice = Result(Status.CRITICAL, Reason.THRESHOLD, "failed twice in a row; newest good web1-24", 0.1,
                   jst(26, 7, 5), ticket=Ticket.BACKUP)
    await notify(engine, spec, Event.CHANGED, twice, 7)
    sent = (await messages(store))[2:]
    assert [m["summary"] for m in sent] == ["web1: failed twice in a row; newest good web1-24",
                                            "【作業予定】web1: failed twice in a row; newest good web1-24"]
    assert sent[0]["details"]["kind"] == "backup_ticket" and sent[0]["severity"] == "warning"
    calendar = engine.calendars.for_host("web1")
    assert sent[0]["details"]["scheduled"] == calendar.next_business_moment(engine.clock.time())
    # never a ladder: no action decided, no ladder page
    assert not [e for e in await store.incidents.journal() if e.event in ("decided", "blocked", "page")]
    assert engine.state("web1").ladder is None


async def test_the_dispatch_page_names_the_last_good_backup_or_says_none_is_known(engine):
    from monitord.escalation import ladder as esc

    engine, store, specs = engine
    directory = engine.ctx.state_dir / "backup" / "web1" / "backup"
    directory.mkdir(parents=True)
    taken = engine.clock.time() - 5 * 3600
    lastbackup.write_record(directory, "local:/srv/backup/web1", engine.clock.time(), [
        {"name": "web1-old", "at": taken - DAY, "size": 10, "stale_from": engine.clock.time() - 1},
        {"name": "web1-new", "at": taken, "size": 3 * 1024 ** 3, "stale_from": engine.clock.time() + DAY}])
    for host in ("web1", "web2", "web3"):
        await engine._commit(host, engine.state(host), [esc.Page("dispatch", 3, f"{host} is down: dispatch")],
                             esc.Confirmed("ping", True, None), engine.clock.time())
    pages = {m["source"]: m["details"] for m in await messages(store) if m["details"].get("kind") == "dispatch"}
    when = lastbackup.format_time(taken, TOKYO)
    assert pages["web1"]["last_backup"] == [
        f"backup: last good backup {when}, generation web1-new at local:/srv/backup/web1, 3.0 GiB"]
    assert pages["web2"]["last_backup"] == ["no backup check configured: last backup unknown"]
    assert pages["web3"]["last_backup"] is None and pages["web3"]["backup_contract"] is False

    lastbackup.write_record(directory, "local:/srv/backup/web1", engine.clock.time(), [
        {"name": "web1-new", "at": taken, "size": None, "stale_from": engine.clock.time()}])
    await engine._commit("web1", engine.state("web1"), [esc.Page("dispatch", 3, "web1 is down again")],
                         esc.Confirmed("ping", True, None), engine.clock.time())
    last = [m["details"] for m in await messages(store) if m["summary"] == "web1: web1 is down again"][0]
    assert last["last_backup"] == [f"backup: last good backup {when}, generation web1-new at local:/srv/backup/web1"
                                   " - STALE: older than its schedule allows"]


# ---------------------------------------------------------------------------------------
# The daemon: the results route, kept records, never a ladder


@pytest.mark.integration
def test_the_daemon_takes_backup_results_and_keeps_the_last_good_backup(tmp_path):
    import json
    import signal
    import urllib.error
    import urllib.request

    from tests.daemon_proc import Daemon, wait_for

    (tmp_path / "backup.token").write_text("nightly-token\n")
    gens = tmp_path / "gens"
    make_generations(gens, nights_back(3), [100] * 3, named=False)
    port = free_port()
    config = tmp_path / "monitord.yaml"
    config.write_text(f"""
daemon: {{state_path: {tmp_path / "state.db"}, metrics_listen: 127.0.0.1:{port}}}
defaults: {{intervals: {{backup: 1s}}, retry_interval: 1s, backup_plan: D3}}
hosts:
  web1:
    address: 127.0.0.1
    instructions: {{backup_contract: true}}
    checks:
      nightly: {{kind: backup, transport: heartbeat, token: {{file: backup.token}}, timeout: 900ms}}
      files: {{kind: backup, transport: files, where: local, location: {gens}, pattern: "gen-*", timeout: 900ms}}
""")
    daemon = Daemon(tmp_path, config, port).start()
    try:
        wait_for(lambda: daemon.value("monitord_probe_success", host="web1", check="files", kind="backup") == 1, 20,
                 "the files check ran")
        record = lastbackup.last_good("files", json.loads((tmp_path / "backup/web1/files/last_backup.json").read_text()))
        assert (record.generation, record.size, record.stale) == ("gen-2", 100, False)

        body = json.dumps({"status": "critical", "message": "nightly: snapshot failed"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/heartbeat/web1/nightly", data=body,
                                         method="POST", headers={"Authorization": "Bearer nightly-token"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 204
        wait_for(lambda: daemon.value("monitord_check_state", host="web1", check="nightly") == 2, 20,
                 "the failed backup confirmed")
        assert daemon.value("monitord_probe_status", host="web1", check="nightly") == 1  # a warning: one failure
        wrong = urllib.request.Request(request.full_url, data=b"", method="POST",
                                       headers={"Authorization": "Bearer not-it"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=5)
        assert refused.value.code == 401
        assert "decided" not in daemon.events("web1")  # a notice, never a ladder
    finally:
        daemon.proc.stop(signal.SIGTERM)
