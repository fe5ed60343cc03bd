"""The ``logs`` probe: patterns, formatting and retention offline; then over a real sshd, a fake
``journalctl`` with cursors and real log files that get rotated between runs."""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitord.config import parse_config
from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from probes import logs
from monitord.shared.probe import ProbeCall, ProbeContext
from tests.peers import write_file
from tests.ssh_peer import SshHost

integration = pytest.mark.integration


@pytest.mark.parametrize(
    "line, expected",
    [
        ("kernel: blk_update_request: I/O error, dev sdb, sector 2048", "I/O error"),
        ("kernel: Buffer I/O error on dev sda1, logical block 0", "I/O error"),
        ("kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
         "EXT4 error"),
        ("kernel: XFS (sdb1): Metadata corruption detected at xfs_inode_buf_verify", "XFS corruption"),
        ("kernel: mce: [Hardware Error]: Machine check events logged", "machine check"),
        ("kernel: Out of memory: Killed process 1234 (java) total-vm:123kB", "out of memory"),
        ("kernel: php-fpm[999]: segfault at 0 ip 00007f sp 00007ffd error 4 in libc.so", "segfault"),
        ("mdadm[812]: DegradedArray event detected on md device /dev/md0", "RAID degraded"),
        ("kernel: md/raid1:md0: Disk failure on sdb1, disabling device.", "RAID degraded"),
        ("smartd[700]: Device: /dev/sda [SAT], FAILED SMART self-check. BACK UP DATA NOW!", "SMART failing"),
        ("kernel: e1000e: eth0 NIC Link is Down", "NIC link down"),
        ("sshd[42]: Accepted publickey for deploy from 10.0.0.5", None),
        ("CRON[77]: (root) CMD (command -v debian-sa1 > /dev/null)", None),
    ],
)
def test_default_patterns(line, expected):
    found = logs.match([("journal", line)], logs.LogsParams())
    assert [pattern.name for pattern, _ in found] == ([expected] if expected else [])


def test_ignore_and_extra_patterns():
    params = logs.LogsParams(
        ignore=[r"sdz"], extra_patterns=[{"name": "app panic", "regex": r"PANIC", "severity": "critical"}]
    )
    lines = [("f", "I/O error, dev sdz"), ("f", "worker PANIC: out of slots"), ("f", "I/O error, dev sda")]
    assert [(p.name, line) for p, line in logs.match(lines, params)] == [
        ("app panic", "worker PANIC: out of slots"), ("I/O error", "I/O error, dev sda")]


def test_grading():
    params = logs.LogsParams(show_lines=1)
    lines = [("journal", "kernel: I/O error, dev sdb"), ("journal", "ok"), ("journal", "kernel: EXT4-fs error (device sdb1)")]
    outcome = logs.grade(logs.match(lines, params), logs.Collected(lines), params)
    assert (outcome.status, outcome.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert outcome.summary == "2 log matches (1 EXT4 error, 1 I/O error): kernel: I/O error, dev sdb"
    assert outcome.values == {"lines_read": 3, "matches": 2, "matches_critical": 1, "backlog": 0}
    quiet = logs.grade([], logs.Collected(lines[1:2]), params)
    assert (quiet.status, quiet.summary) == (Status.OK, "1 new log line, no matches")


def test_journal_line():
    entry = {"__REALTIME_TIMESTAMP": "1715682121000000", "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "kernel",
             "MESSAGE": "EXT4-fs error\nsecond line"}
    assert logs.journal_line(entry) == "2024-05-14T10:22:01Z web1 kernel: EXT4-fs error\\nsecond line"
    binary = {"__REALTIME_TIMESTAMP": "0", "SYSLOG_IDENTIFIER": "app", "_PID": "7", "MESSAGE": [104, 105, 255]}
    assert logs.journal_line(binary) == "1970-01-01T00:00:00Z - app[7]: hi\ufffd"


def test_retention(tmp_path):
    now = datetime.datetime(2024, 5, 14, 12, tzinfo=datetime.timezone.utc).timestamp()
    for day in ("2024-04-01", "2024-05-10", "not-a-date"):
        (tmp_path / f"{day}.log").write_text("x\n")
    logs.store(tmp_path, [("journal", "a"), ("/var/log/syslog", "b")], now, keep=7 * 86400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2024-05-10.log", "2024-05-14.log", "not-a-date.log"]
    assert (tmp_path / "2024-05-14.log").read_text() == "journal\ta\n/var/log/syslog\tb\n"


def test_params_and_config():
    assert logs.KIND.default_interval == 3600 and logs.LogsParams().max_attempts == 1
    with pytest.raises(ValidationError, match="log files need absolute paths: var/log/syslog"):
        logs.LogsParams(files=["var/log/syslog"])
    with pytest.raises(ValidationError, match="nothing to read"):
        logs.LogsParams(journal=False)
    with pytest.raises(Exception) as info:
        parse_config("hosts:\n  web1:\n    address: 127.0.0.1\n    checks:\n      logs: {}\n")
    assert "hosts.web1.checks.logs.kind: kind logs needs a ssh: block on the host" in str(info.value)


# -- over SSH

FAKE_JOURNALCTL = r'''#!/usr/bin/python3
"""journalctl stand-in: prints JOURNAL (JSON lines with __CURSOR) honouring --after-cursor and --lines."""
import json, sys
JOURNAL, CALLS = {journal!r}, {calls!r}
args = sys.argv[1:]
with open(CALLS, "a") as f:
    f.write(" ".join(["journalctl", *args]) + "\n")
try:
    entries = [json.loads(line) for line in open(JOURNAL) if line.strip()]
except OSError:
    print("No journal files were found.", file=sys.stderr)
    sys.exit(1)
option = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
if "after-cursor" in option:
    cursors = [e["__CURSOR"] for e in entries]
    if option["after-cursor"] not in cursors:
        print("Failed to seek to cursor: Invalid argument", file=sys.stderr)
        sys.exit(1)
    entries = entries[cursors.index(option["after-cursor"]) + 1:]
elif "lines" in option:
    entries = entries[-int(option["lines"]):] if int(option["lines"]) else []
for entry in entries:
    print(json.dumps(entry))
'''


class Journal:
    """The fake journal on the SSH host: entries appended by the test."""

    def __init__(self, host: SshHost) -> None:
        self.path = host.state / "journal.jsonl"
        self.path.touch()
        os.chmod(self.path, 0o644)
        write_file(host.directory / "fakebin" / "journalctl",
                   FAKE_JOURNALCTL.format(journal=str(self.path), calls=str(host.state / "calls.log")), 0o755)
        self.count = 0

    def add(self, *messages: str, ident: str = "kernel") -> None:
        with self.path.open("a") as out:
            for message in messages:
                self.count += 1
                out.write(json.dumps({"__CURSOR": f"s=feed;i={self.count}", "__REALTIME_TIMESTAMP": "1715682121000000",
                                      "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": ident, "MESSAGE": message}) + "\n")


class LogsRunner:
    """Runs the probe against the SSH host with a persistent state directory, like the daemon."""

    def __init__(self, host: SshHost, state: Path) -> None:
        self.host, self.state = host, state

    async def run(self, **params) -> Result:
        ctx = ProbeContext(state_dir=self.state)
        call = ProbeCall("web1", self.host.address, 30.0, check="syslog", ssh=self.host.config())
        try:
            return await run_probe(logs.KIND, ctx, call, logs.LogsParams(**params), now=time.time())
        finally:
            await ctx.aclose()

    def collected(self) -> list[str]:
        """Every line kept so far, in order (``SOURCE<TAB>LINE``)."""
        directory = self.state / "logs" / "web1" / "syslog" / "collected"
        return [line for path in sorted(directory.glob("*.log")) for line in path.read_text().splitlines()]


@integration
async def test_journal_is_read_from_its_cursor(ssh_host: SshHost, tmp_path):
    journal = Journal(ssh_host)
    journal.add("old boot message", "kernel: I/O error, dev sdb, sector 2048", "systemd: Started cron")
    probe = LogsRunner(ssh_host, tmp_path)
    first = await probe.run(initial_lines=2)  # a first run reads the last initial_lines entries only
    assert (first.status, first.reason) == (Status.WARNING, Reason.THRESHOLD), first.summary
    assert first.summary == "1 log match (1 I/O error): 2024-05-14T10:22:01Z web1 kernel: kernel: I/O error, dev sdb, sector 2048"
    assert first.values["lines_read"] == 2
    quiet = await probe.run()
    assert (quiet.status, quiet.summary) == (Status.OK, "0 new log lines, no matches")
    journal.add("EXT4-fs error (device sda1): ext4_lookup: deleted inode referenced", "all is well")
    critical = await probe.run()
    assert critical.status is Status.CRITICAL and critical.values["lines_read"] == 2, critical.summary
    assert "1 EXT4 error" in critical.summary
    calls = [c for c in ssh_host.calls() if c.startswith("journalctl")]
    assert "--lines=2" in calls[0] and "--after-cursor=s=feed;i=3" in calls[1] and "--after-cursor=s=feed;i=3" in calls[2]
    kept_lines = probe.collected()
    assert len(kept_lines) == 4 and all(line.startswith("journal\t") for line in kept_lines)


@integration
async def test_journal_failure_is_an_error(ssh_host: SshHost, tmp_path):
    Journal(ssh_host).path.unlink()
    result = await LogsRunner(ssh_host, tmp_path).run()
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.ERROR)
    assert result.summary == "journalctl failed: No journal files were found."


def _log(host: SshHost, name: str, text: str | bytes, mode: str = "a") -> Path:
    path = host.state / name
    with path.open(mode + "b") as out:
        out.write(text.encode() if isinstance(text, str) else text)
    path.chmod(0o644)
    return path


@integration
async def test_files_survive_rotation_and_nothing_is_read_twice(ssh_host: SshHost, tmp_path):
    log = _log(ssh_host, "syslog", "line 1\nline 2\n")
    probe = LogsRunner(ssh_host, tmp_path)
    files = dict(journal=False, files=[str(log)])
    first = await probe.run(**files)
    assert first.ok and first.values["lines_read"] == 2, first.summary
    _log(ssh_host, "syslog", "line 3\nline 4 half")  # the daemon is writing line 4
    second = await probe.run(**files)
    assert second.values["lines_read"] == 1  # a line still being written waits for the next run
    _log(ssh_host, "syslog", " done\nkernel: I/O error, dev sdb\n")
    log.rename(ssh_host.state / "syslog.1")  # logrotate renames...
    _log(ssh_host, "syslog.1", "line 6, written to the old file after the rename\n")
    _log(ssh_host, "syslog", "line 7 in the new file\n")  # ...and a new file appears
    rotated = await probe.run(**files)
    assert (rotated.status, rotated.values["lines_read"]) == (Status.WARNING, 4), rotated.summary
    _log(ssh_host, "syslog", "line 8\n")
    after = await probe.run(**files)
    assert after.ok and after.values["lines_read"] == 1
    assert [line.split("\t", 1)[1] for line in probe.collected()] == [
        "line 1", "line 2", "line 3", "line 4 half done", "kernel: I/O error, dev sdb",
        "line 6, written to the old file after the rename", "line 7 in the new file", "line 8",
    ]
    assert all(line.startswith(f"{log}\t") for line in probe.collected())


@integration
async def test_file_edge_cases(ssh_host: SshHost, tmp_path):
    log = _log(ssh_host, "app.log", b"x" * 100 + b"\nold tail \xff\xfe not UTF-8\n")
    probe = LogsRunner(ssh_host, tmp_path)
    files = dict(journal=False, files=[str(log), str(ssh_host.state / "absent.log")], initial_bytes=30)
    first = await probe.run(**files)  # starts 30 bytes before the end: the cut line is skipped
    assert first.values["lines_read"] == 1 and "absent.log missing" in first.summary, first.summary
    _log(ssh_host, "app.log", "copytruncate: new start\n", mode="w")  # same inode, shorter
    truncated = await probe.run(**files)
    assert truncated.values["lines_read"] == 1 and "app.log was truncated" in truncated.summary
    _log(ssh_host, "app.log", "more\n")
    log.rename(ssh_host.state / "app.log.1")
    (ssh_host.state / "app.log.1").unlink()  # rotated and compressed away before the run
    fresh = "fresh, and longer than what was read of the old file\n"
    _log(ssh_host, "app.log", fresh)
    lost = await probe.run(**files)
    # the new file may have reused the deleted one's inode number: its first bytes tell
    assert lost.values["lines_read"] == 1, lost.summary
    assert ("rotated away before its last lines were read" in lost.summary
            or "app.log was replaced or truncated and refilled: read from its start" in lost.summary)
    assert probe.collected()[-1].endswith("\t" + fresh.strip())
    assert probe.collected()[0].endswith("old tail \ufffd\ufffd not UTF-8")


@integration
async def test_backlog_is_read_by_later_runs(ssh_host: SshHost, tmp_path):
    line = "y" * 1023 + "\n"
    log = _log(ssh_host, "big.log", "")
    probe = LogsRunner(ssh_host, tmp_path)
    files = dict(journal=False, files=[str(log)], max_bytes=logs.CHUNK_BYTES)
    assert (await probe.run(**files)).values["lines_read"] == 0
    _log(ssh_host, "big.log", line * 700)  # 700 KiB: more than one run may read
    first = await probe.run(**files)
    assert first.values["backlog"] == 1 and first.values["lines_read"] == 512, first.summary
    second = await probe.run(**files)
    assert second.values["backlog"] == 0 and second.values["lines_read"] == 188


@integration
async def test_wrong_key_is_auth(ssh_host: SshHost, tmp_path):
    other_key = ssh_host.directory / "host_key"  # a valid key the host does not accept for login
    ctx = ProbeContext(state_dir=tmp_path)
    call = ProbeCall("web1", ssh_host.address, 30.0, check="syslog", ssh=ssh_host.config(key={"file": str(other_key)}))
    try:
        result = await run_probe(logs.KIND, ctx, call, logs.LogsParams(), now=time.time())
    finally:
        await ctx.aclose()
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.AUTH), result.summary
