"""The ``process`` check: parsing and grading offline, then counting real processes of this
machine over real sshd (``ps``) and real snmpd (hrSWRunTable)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from monitord.config import ConfigError, parse_config
from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from probes import process
from monitord.shared.probe import ProbeCall, ProbeContext
from remediation.osprofile import PROFILES, ProcessRow
from tests.snmp_peer import SnmpAgent
from tests.ssh_peer import SshHost

integration = pytest.mark.integration

PS_OUTPUT = (
    f"{'systemd':<64} /sbin/init splash\n"
    f"{'Web Content':<64} /usr/lib/firefox/firefox -contentproc 12\n"
    f"{'vvault':<64} /opt/vvault/bin/vvault --config /etc/vvault.conf\n"
    f"{'kthreadd':<64} [kthreadd]\n"
)


def params(**fields) -> process.ProcessParams:
    return process.ProcessParams(**fields)


def test_linux_ps_output_is_parsed_by_width():
    rows = PROFILES["linux"].parse_processes(PS_OUTPUT)
    assert rows[1] == ProcessRow("Web Content", "/usr/lib/firefox/firefox", "-contentproc 12")
    assert rows[2].executable == "vvault" and rows[3] == ProcessRow("kthreadd", "[kthreadd]")


def test_windows_get_process_output_is_parsed_and_names_fold():
    windows = PROFILES["windows"]
    rows = windows.parse_processes("VVAULT\tC:\\Program Files\\VVAULT\\VVAULT.exe\nIdle\t\n")
    assert rows == [ProcessRow("VVAULT", "C:\\Program Files\\VVAULT\\VVAULT.exe"), ProcessRow("Idle", "")]
    assert rows[0].executable == "VVAULT.exe"
    assert process.count(rows, params(name="vvault.EXE"), windows) == 1
    assert process.count(rows, params(name="VVAULT.exe"), PROFILES["linux"]) == 1  # by executable name
    assert process.count(rows, params(name="vvault"), PROFILES["linux"]) == 0


@pytest.mark.parametrize("fields,found", [
    ({"name": "vvault"}, 1),
    ({"name": "Web Content"}, 1),
    ({"name": "firefox"}, 1),  # the executable's name
    ({"name": "vvaul"}, 0),  # names match whole
    ({"pattern": r"--config /etc/vvault\.conf"}, 1),
    ({"pattern": r"^/(sbin|opt)/"}, 2),
])
def test_count_by_name_or_pattern(fields, found):
    assert process.count(PROFILES["linux"].parse_processes(PS_OUTPUT), params(**fields), PROFILES["linux"]) == found


@pytest.mark.parametrize("found,status,reason", [
    (0, Status.CRITICAL, Reason.ERROR),  # down: a restart may help
    (1, Status.CRITICAL, Reason.ERROR),
    (2, Status.OK, Reason.NONE),
    (3, Status.OK, Reason.NONE),
    (4, Status.WARNING, Reason.THRESHOLD),  # runaway: people decide, nothing is killed
])
def test_bounds(found, status, reason):
    outcome = process.grade(found, params(name="worker", min=2, max=3))
    assert (outcome.status, outcome.reason, outcome.values["process_count"]) == (status, reason, found)


@pytest.mark.parametrize("check,problem", [
    ("{kind: process}", "hosts.h.checks.p.process: give exactly one of name or pattern (line 6)"),
    ("{kind: process, name: a, pattern: b}", "hosts.h.checks.p.process: give exactly one of name or pattern (line 6)"),
    ("{kind: process, name: a, min: 3, max: 2}", "hosts.h.checks.p.process: max 2 must not be less than min 3 (line 6)"),
    ("{kind: process, pattern: '(('}", None),
    ("{kind: process, name: a}", "hosts.h.checks.p.kind: kind process needs a ssh: block on the host (line 6)"),
    ("{kind: process, name: a, transport: snmp}",
     "hosts.h.checks.p.kind: kind process needs a snmp: block on the host (line 6)"),
])
def test_config_problems(check, problem):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"hosts:\n  h:\n    address: 127.0.0.1\n    checks:\n      p:\n        {check}\n")
    if problem is None:
        assert "invalid regular expression" in caught.value.problems[0]
    else:
        assert caught.value.problems == [problem]


def test_a_process_restart_needs_a_start_command():
    with pytest.raises(ConfigError) as caught:
        parse_config("hosts:\n  h:\n    address: 127.0.0.1\n    ssh: {key: {env: K}}\n    checks:\n      p:\n"
                     "        {kind: process, name: a, restart: {kill_command: pkill a}}\n")
    assert caught.value.problems == ["hosts.h.checks.p.restart: kill_command needs a start_command (line 7)"]


# -- real processes of this machine, seen over sshd and snmpd


@pytest.fixture
def workers(tmp_path) -> str:
    """Two processes of a program with a name no other process has; killed by PID afterwards."""
    name = f"mdtw{os.getpid() % 100000}"
    binary = tmp_path / name
    shutil.copy("/bin/sleep", binary)
    procs = [subprocess.Popen([str(binary), "600"]) for _ in range(2)]
    yield name
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


async def run(call: ProbeCall, **fields) -> Result:
    ctx = ProbeContext()
    try:
        return await run_probe(process.KIND, ctx, call, params(**fields), now=time.time())
    finally:
        await ctx.aclose()


@integration
async def test_over_ssh(ssh_host: SshHost, workers: str):
    call = ProbeCall("app1", "127.0.0.1", 10.0, "p", ssh=ssh_host.config())
    by_name = await run(call, name=workers, min=2, max=2)
    assert by_name.status is Status.OK and by_name.values["process_count"] == 2, by_name.summary
    by_pattern = await run(call, pattern=rf"/{workers} 600$")
    assert by_pattern.values["process_count"] == 2, by_pattern.summary
    too_few = await run(call, name=workers, min=3)
    assert (too_few.status, too_few.reason) == (Status.CRITICAL, Reason.ERROR)
    assert too_few.summary == f"process {workers}: 2 running, expected at least 3"


@integration
async def test_over_ssh_login_refused_is_a_typed_failure(ssh_host: SshHost, tmp_path: Path):
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    from monitord.shared.fields import SecretRef

    result = await run(ProbeCall("app1", "127.0.0.1", 10.0, "p", ssh=ssh_host.config(key=SecretRef(file=other_key))),
                       name="sshd")
    assert result.reason is Reason.AUTH


@integration
async def test_over_snmp(snmp_agent: SnmpAgent, workers: str):
    call = ProbeCall("app1", "127.0.0.1", 10.0, "p", snmp=snmp_agent.config())
    by_name = await run(call, name=workers, min=2, transport="snmp")
    assert by_name.status is Status.OK and by_name.values["process_count"] == 2, by_name.summary
    by_args = await run(call, pattern=rf"{workers} 600", transport="snmp")  # hrSWRunPath + hrSWRunParameters
    assert by_args.values["process_count"] == 2, by_args.summary
    gone = await run(call, name=workers + "x", transport="snmp")
    assert gone.status is Status.CRITICAL and gone.values["process_count"] == 0
