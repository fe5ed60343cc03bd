"""Windows hosts (``os: windows``): services, processes, disks and event logs over real sshd,
with the PowerShell stand-in on the far side (tests/powershell_peer.py), plus the profile's
pure parts and the config rules."""

from __future__ import annotations

import base64
import json
import time

import pytest

from monitord.config import ConfigError, parse_config
from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from probes import disk, logs, process
from monitord.shared.probe import ProbeCall, ProbeContext
from monitord.shared.power import ActionError
from remediation.osprofile import PROFILES, ps_literal
from tests.powershell_peer import WindowsHost

integration = pytest.mark.integration
WINDOWS = PROFILES["windows"]
GIB = 1 << 30


def test_scripts_travel_base64_encoded_as_utf16():
    command = WINDOWS.wrap("Write-Output 'ジョブ'")
    head, encoded = command.rsplit(" ", 1)
    assert head == "powershell -NoProfile -NonInteractive -EncodedCommand"
    assert base64.b64decode(encoded).decode("utf-16-le") == "Write-Output 'ジョブ'"


def test_names_are_single_quoted_literals():
    assert ps_literal("O'Brien $(rm)") == "'O''Brien $(rm)'"


def test_windows_disks_use_the_df_percentage():
    mounts, usages = disk.parse_windows_disks("C:\tNTFS\t100\t9\r\nD:\tNTFS\t100\t91\r\nE:\t\t\t\r\n")
    assert [(m.path, m.fstype) for m in mounts] == [("C:", "NTFS"), ("D:", "NTFS")]  # E: has no media
    assert [(u.mount, u.disk, u.inodes) for u in usages] == [("C:", 91, None), ("D:", 9, None)]  # rounded up


def test_windows_event_line_names_provider_and_id():
    line = logs.event_line("System", {"time": "2026-11-26T01:02:03Z", "provider": "Service Control Manager",
                                      "event": 7034, "level": "Error", "message": "The VVAULT service\r\nterminated."})
    assert line == "2026-11-26T01:02:03Z System Service Control Manager[7034] Error: The VVAULT service terminated."


@pytest.mark.parametrize("provider,event_id,pattern,severity", [
    ("disk", 7, "disk error", "critical"),
    ("Microsoft-Windows-Ntfs", 98, "NTFS error", "critical"),
    ("Ntfs", 55, "NTFS error", "critical"),
    ("Service Control Manager", 7031, "service crashed", "warning"),
    ("EventLog", 6008, "unexpected shutdown", "warning"),
    ("Microsoft-Windows-Kernel-Power", 41, "unexpected shutdown", "warning"),
    ("Service Control Manager", 7036, None, None),  # entered the running state: no match
    ("disk", 700, None, None),
])
def test_windows_patterns(provider, event_id, pattern, severity):
    line = logs.event_line("System", {"time": "t", "provider": provider, "event": event_id, "message": "m"})
    found = logs.match([("System", line)], logs.LogsParams(), windows=True)
    assert [(p.name, p.severity) for p, _ in found] == ([(pattern, severity)] if pattern else [])


def host_yaml(os: str, check: str) -> str:
    return (f"hosts:\n  nas1:\n    address: 127.0.0.1\n    os: {os}\n    ssh: {{key: {{env: K}}}}\n"
            f"    checks:\n      logs:\n        {check}\n")


@pytest.mark.parametrize("os,check,problem", [
    ("windows", "{files: [/var/log/syslog]}", "journal and files are read on linux hosts; a windows host has event_logs"),
    ("windows", "{journal: true}", "journal and files are read on linux hosts; a windows host has event_logs"),
    ("linux", "{event_logs: [System]}", "event_logs are read on windows hosts (os: windows)"),
])
def test_log_sources_must_fit_the_os(os, check, problem):
    with pytest.raises(ConfigError) as caught:
        parse_config(host_yaml(os, check))
    assert caught.value.problems == [f"hosts.nas1.checks.logs: {problem} (line 7)"]


def test_host_os_reaches_its_ssh_block():
    config = parse_config(host_yaml("windows", "{event_logs: [System, Application]}"))
    assert config.hosts["nas1"].ssh.os == "windows"
    assert config.checks()[0].ssh.os == "windows"


# -- against sshd with the PowerShell stand-in


def call(host: WindowsHost, check: str = "c") -> ProbeCall:
    return ProbeCall("nas1", "127.0.0.1", 10.0, check, ssh=host.ssh.config(os="windows"))


async def probe(kind, params, host: WindowsHost, ctx: ProbeContext | None = None) -> Result:
    own = ctx is None
    ctx = ctx or ProbeContext()
    try:
        return await run_probe(kind, ctx, call(host), params, now=time.time())
    finally:
        if own:
            await ctx.aclose()


@integration
async def test_service_state_and_restart(windows_host: WindowsHost):
    windows_host.add_service("VVAULT", status="Stopped")
    client = windows_host.ssh.client(os="windows")
    assert await client.service_active("VVAULT") is False
    await client.restart_service("VVAULT")
    assert await client.service_active("VVAULT") is True
    assert windows_host.calls() == ["Get-Service VVAULT", "Restart-Service VVAULT", "Get-Service VVAULT"]
    assert windows_host.ssh.calls() == []  # no systemctl on a Windows host


@integration
async def test_restart_of_an_unknown_service_is_a_typed_error(windows_host: WindowsHost):
    client = windows_host.ssh.client(os="windows")
    assert await client.service_active("No'Such") is False
    with pytest.raises(ActionError) as caught:
        await client.restart_service("No'Such")
    assert caught.value.reason is Reason.ERROR
    assert "Cannot find any service with service name 'No'Such'" in caught.value.summary


@integration
async def test_processes_through_get_process(windows_host: WindowsHost):
    windows_host.add_service("VVAULT", process="VVAULT")
    ok = await probe(process.KIND, process.ProcessParams(name="vvault.exe"), windows_host)
    assert ok.status is Status.OK and ok.values["process_count"] == 1, ok.summary
    windows_host.crash("VVAULT")
    down = await probe(process.KIND, process.ProcessParams(name="VVAULT"), windows_host)
    assert (down.status, down.reason) == (Status.CRITICAL, Reason.ERROR)
    assert windows_host.calls() == ["Get-Process", "Get-Process"]


@integration
async def test_disks_through_win32_logicaldisk(windows_host: WindowsHost):
    windows_host.set_disks(("C:", "NTFS", 100 * GIB, 5 * GIB), ("D:", "NTFS", 1000 * GIB, 600 * GIB))
    result = await probe(disk.KIND, disk.DiskParams(transport="ssh", critical_percent=90), windows_host)
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert "C:" in result.summary and "D:" not in result.summary.split("fullest")[0], result.summary
    assert windows_host.calls() == ["Get-CimInstance Win32_LogicalDisk"]


@integration
async def test_event_logs_are_read_incrementally_by_record_id(windows_host: WindowsHost, tmp_path):
    for i in range(3):
        windows_host.add_event("System", "Service Control Manager", 7036, f"service {i} entered the running state",
                               level="Information")
    windows_host.add_event("Application", "VVAULT", 100, "backup finished", level="Information")
    params = logs.LogsParams(initial_lines=2)
    ctx = ProbeContext(state_dir=tmp_path)
    first = await probe(logs.KIND, params, windows_host, ctx)
    assert first.status is Status.OK and first.values["lines_read"] == 3, first.summary  # 2 newest + 1
    crash = windows_host.add_event("System", "Service Control Manager", 7034, "The VVAULT service terminated unexpectedly.")
    windows_host.add_event("System", "Ntfs", 55, "A corruption was discovered in the file system structure on volume D:.")
    second = await probe(logs.KIND, params, windows_host, ctx)
    assert (second.status, second.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert second.values["lines_read"] == 2 and second.values["matches_critical"] == 1
    assert second.summary.startswith("2 log matches (1 NTFS error, 1 service crashed)"), second.summary
    third = await probe(logs.KIND, params, windows_host, ctx)
    assert third.status is Status.OK and third.values["lines_read"] == 0
    await ctx.aclose()
    assert crash == 4
    assert windows_host.calls() == ["Get-WinEvent System after=-1", "Get-WinEvent Application after=-1",
                                    "Get-WinEvent System after=3", "Get-WinEvent Application after=1",
                                    "Get-WinEvent System after=5", "Get-WinEvent Application after=1"]
    positions = json.loads((tmp_path / "logs" / "nas1" / "c" / "positions.json").read_text())
    assert positions["events"] == {"System": 5, "Application": 1} and "journal" not in positions


@integration
async def test_a_missing_event_log_is_an_error(windows_host: WindowsHost):
    result = await probe(logs.KIND, logs.LogsParams(event_logs=["VVAULT"]), windows_host)
    assert result.reason is Reason.ERROR
    assert 'not an event log on the localhost computer that matches "VVAULT"' in result.summary
