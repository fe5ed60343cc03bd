"""Contract 004 end to end: the real daemon against a real libvirt (libvirtd serving the test
hypervisor), real sshd and real pager receivers.

How a VM "reboots" here: the test hypervisor has no guest, so the libvirt watcher
(tests/libvirt_peer.py) maps the domain's lifecycle onto the fake loopback host the daemon
pings: when libvirt reports the domain started, the host's address comes back a second
later. The daemon sees nothing of this; it only talks to libvirtd. The test driver's reset
emits no lifecycle event, so these VM hosts use ``power_method: onoff`` (destroy, verified
off, create, verified on): the counted events are exactly what the daemon did to the domain.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.daemon_proc import wait_for
from tests.powershell_peer import WindowsHost
from tests.test_scenarios import HOST, HttpCapture, fleet, ladder, loop, mailbox  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.integration

UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
ONOFF = {"power_method": "onoff"}


@pytest.fixture
def appliance_vm(hypervisor, loop, HOST):  # noqa: N803
    """Domain ``nas1`` that brings the loopback host back a second after it starts."""
    hypervisor.add_domain("nas1", UUID)
    hypervisor.on("nas1", "started", f"(sleep 1; {loop.up_cmd(HOST)}) &")
    return hypervisor


def vm_block(hv) -> dict:
    return {"uri": hv.uri, "domain": "nas1"}


def journal(daemon, host: str = "nas1") -> list[dict]:
    """The host's journal entries with their details (``monitord journal --json``)."""
    return [json.loads(line) for line in daemon.cli("journal", "--host", host, "--json").splitlines()]


def test_vm_host_down_is_cycled_through_libvirt_once_and_resolved(fleet, loop, HOST, appliance_vm, make_ssh_host):
    ssh = make_ssh_host(HOST)
    fleet.add("nas1", HOST, ssh=ssh, vm=vm_block(appliance_vm))
    daemon = fleet.start(remediation=ONOFF)
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "resolved" in ladder(daemon, "nas1"), 40, "the ladder to resolve")
    assert appliance_vm.lifecycle("nas1") == ["stopped:destroyed", "started"]
    assert ladder(daemon, "nas1") == [
        "decided power_reset", "outcome power_reset ok", "decided wait_boot", "outcome wait_boot ok", "resolved",
    ]
    outcome = next(e for e in journal(daemon) if e["event"] == "outcome" and e["decision"] == "power_reset")
    assert outcome["detail"]["driver"] == "vm"
    assert outcome["detail"]["steps"][:2] == ["vm: power was on", "vm: sent off (attempt 1)"]
    assert daemon.value("monitord_actions_total", kind="power_reset", outcome="ok") == 1


@pytest.mark.parametrize("guard", ["dry_run", "maintenance", "parent_down"])
def test_guards_hold_vm_power(fleet, loop, HOST, appliance_vm, guard):
    hypervisor_host = loop.address(3)
    fleet.add("hv1", hypervisor_host)
    fleet.add("nas1", HOST, vm=vm_block(appliance_vm), parents=["hv1"])
    daemon = fleet.start(*(["--dry-run"] if guard == "dry_run" else []), remediation=ONOFF)
    if guard == "maintenance":
        daemon.cli("maintenance", "add", "--host", "nas1", "--duration", "1h", "--reason", "hypervisor patching")
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="ping") == 1, 20, "host up")
    loop.down(HOST, *([hypervisor_host] if guard == "parent_down" else []))
    wait_for(lambda: f"blocked {guard}" in ladder(daemon, "nas1"), 30, f"the {guard} guard")
    time.sleep(2)
    assert appliance_vm.lifecycle("nas1") == []
    assert "outcome power_reset ok" not in ladder(daemon, "nas1")


def test_a_vm_that_keeps_failing_stops_at_the_reset_limit(fleet, loop, HOST, hypervisor):
    hypervisor.add_domain("nas1", UUID)
    # every start brings the host back for a few seconds only
    hypervisor.on("nas1", "started", f"(sleep 1; {loop.up_cmd(HOST)}; sleep 4; {loop.down_cmd(HOST)}) &")
    fleet.add("nas1", HOST, vm=vm_block(hypervisor))
    daemon = fleet.start(remediation=ONOFF | {"max_resets": 1})
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "page dispatch" in ladder(daemon, "nas1"), 90, "level 3")
    assert hypervisor.lifecycle("nas1") == ["stopped:destroyed", "started"]  # one cycle, no more
    assert "blocked limit" in ladder(daemon, "nas1")


def test_unknown_domain_falls_back_to_a_page(fleet, loop, HOST, appliance_vm):
    fleet.add("nas1", HOST, vm={"uri": appliance_vm.uri, "domain": "not-nas1"})
    daemon = fleet.start(remediation=ONOFF)
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="ping") == 1, 20, "host up")
    loop.down(HOST)
    wait_for(lambda: "page dispatch" in ladder(daemon, "nas1"), 40, "the page")
    assert appliance_vm.lifecycle("nas1") == []
    failed = [e for e in journal(daemon) if e["event"] == "outcome" and e["outcome"] == "failed"]
    assert [e["reason"] for e in failed] == ["error"] and "not-nas1" in failed[0]["detail"]["error"]


@pytest.fixture
def program(make_ssh_host, HOST):  # noqa: N803
    """sshd on the fake host, and a program there with a name of its own (a copy of sleep);
    every instance started is killed by PID afterwards."""
    ssh = make_ssh_host(HOST)
    name = f"mdtvv{os.getpid() % 100000}"
    binary = ssh.state / name
    shutil.copy("/bin/sleep", binary)
    binary.chmod(0o755)
    started = ssh.state / "started"
    started.touch(mode=0o666)  # the first instance is started by the test, the others by the ssh user
    started.chmod(0o666)
    yield ssh, name, f"setsid {binary} 600 >/dev/null 2>&1 </dev/null & echo $! >> {started}"
    for pid in started.read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def test_dead_process_is_killed_restarted_and_verified(fleet, HOST, program):
    ssh, name, start = program
    subprocess.run(start, shell=True, check=True)
    fleet.add("nas1", HOST, ssh=ssh, checks={
        "ping": {"count": 1, "reply_timeout": "1s"},
        "vvault": {"kind": "process", "name": name, "interval": "2s",
                   "restart": {"kill_command": f"pkill -x {name}", "start_command": start, "grace": "500ms"}},
    })
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="vvault") == 1, 20, "process up")
    subprocess.run(["pkill", "-KILL", "-x", name], check=True)  # the program died
    wait_for(lambda: "resolved" in ladder(daemon, "nas1"), 30, "the restart to be verified")
    assert ladder(daemon, "nas1") == ["decided service_restart", "outcome service_restart ok", "resolved"]
    assert len((ssh.state / "started").read_text().split()) == 2  # ours, then exactly one restart
    outcome = next(e for e in journal(daemon) if e["event"] == "outcome")
    assert outcome["detail"]["probe"] == f"process {name}: 1 running" and outcome["detail"]["was_active"] is None
    assert ssh.calls() == []  # no systemctl: a bare process is killed and started


def test_windows_service_is_restarted_with_restart_service_once(fleet, HOST, make_ssh_host):
    windows = WindowsHost(make_ssh_host(HOST))
    windows.add_service("VVAULT", process="VVAULT")
    fleet.add("nas1", HOST, ssh=windows.ssh, os="windows", checks={
        "ping": {"count": 1, "reply_timeout": "1s"},
        "vvault": {"kind": "process", "name": "VVAULT", "interval": "2s", "restart": {"unit": "VVAULT", "grace": "500ms"}},
    })
    daemon = fleet.start()
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="vvault") == 1, 20, "process up")
    windows.crash("VVAULT")
    wait_for(lambda: "resolved" in ladder(daemon, "nas1"), 30, "the restart to be verified")
    assert ladder(daemon, "nas1") == ["decided service_restart", "outcome service_restart ok", "resolved"]
    assert [c for c in windows.calls() if c != "Get-Process"] == [
        "Get-Service VVAULT", "Restart-Service VVAULT"]  # state read for the journal, then one restart
    assert windows.service_status("VVAULT") == "Running" and windows.ssh.calls() == []


def test_level_3_escalates_to_the_iaas_vendor_through_real_receivers(fleet, loop, HOST, appliance_vm, mailbox):
    hook = HttpCapture()
    try:
        fleet.add("nas1", HOST, vm={"uri": appliance_vm.uri, "domain": "gone"}, customer="acme")
        fleet.top["paging"] = {
            "integrations": {
                "mail": {"type": "email", "host": "127.0.0.1", "port": mailbox.port, "tls": "none",
                         "from": "noc@example.jp", "to": ["ops@example.jp"]},
                "iaas-hook": {"type": "webhook", "url": hook.url, "secret": fleet.secret("hook", "h" * 32)},
            },
            "people": {"aoki": {"notify": ["mail"]}},
            "policies": {"ops": {"tiers": [{"targets": ["aoki"]}]}},
            "vendors": {"iaas": {"name": "Example Cloud", "role": "iaas", "notify": ["iaas-hook", "mail"],
                                 "emails": ["support@iaas.example"], "reference": "C-1234"}},
            "routes": [{"policy": "ops", "kinds": ["dispatch"], "vendors": ["iaas"]}, {"policy": "ops"}],
        }
        fleet.top["customers"] = {"acme": {}}
        daemon = fleet.start(remediation=ONOFF)
        wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="ping") == 1, 20, "host up")
        loop.down(HOST)
        wait_for(lambda: hook.bodies and len(mailbox.messages) >= 2, 60, "the vendor escalation")
        time.sleep(2)  # nothing more arrives
        [body] = hook.bodies
        [(incident_id, *_)] = daemon.incidents()
        assert body["dedup_key"] == f"monitord-vendor-iaas-incident-{incident_id}"
        assert body["details"]["tried"] == ["power_reset: failed (error)"] and body["details"]["reference"] == "C-1234"
        to = sorted(m["To"] for m in mailbox.messages)
        assert to == ["ops@example.jp", "support@iaas.example"]  # the on-call page, and the vendor once
        assert [e["decision"] for e in journal(daemon) if e["event"] == "vendor_escalated"] == ["iaas"]
        assert "関連ベンダーへエスカレーション" in daemon.cli("report", "show", str(incident_id))
    finally:
        hook.close()
