"""Contract 004's ladder as configuration (remediation.ladder), end to end: the real daemon, real sshd
(the systemctl shim for the service, a real program for the process), the real libvirt test
hypervisor for the VM (tests/libvirt_peer.py) and a real webhook receiver for the vendor.

The ladder: restart services, restart processes, power cycle the VM, escalate to the IaaS vendor."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.daemon_proc import wait_for
from tests.test_appliance_scenarios import appliance_vm, journal, program, vm_block  # noqa: F401 - fixtures
from tests.test_scenarios import HOST, HttpCapture, fleet, ladder, loop  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.integration

LADDER = [{"restart": "services"}, {"restart": "processes"}, {"power": "cycle"}, {"vendor": "iaas"}]


@pytest.fixture
def vendor_hook():
    hook = HttpCapture()
    yield hook
    hook.close()


def appliance(fleet, HOST, program, vm, hook, checks: dict) -> None:  # noqa: N803
    ssh, _, _ = program
    fleet.add("nas1", HOST, ssh=ssh, vm=vm_block(vm), checks={"ping": {"count": 1, "reply_timeout": "1s"}, **checks})
    fleet.top["paging"] = {
        "integrations": {"oncall-hook": {"type": "webhook", "url": hook.url, "secret": fleet.secret("hook", "h" * 32)}},
        "people": {"aoki": {"notify": ["oncall-hook"]}},
        "policies": {"ops": {"tiers": [{"targets": ["aoki"]}]}},
        "vendors": {"iaas": {"name": "Example Cloud", "role": "iaas", "notify": ["oncall-hook"], "reference": "C-1"}},
        "routes": [{"policy": "ops"}],
    }


def service_check(program) -> dict:
    """The program, restarted as a service whose unit does not bring it back (the restart 'works', the check stays down)."""
    ssh, name, _ = program
    ssh.add_unit("vvault", "exec sleep 600")
    return {"vvault": {"kind": "process", "name": name, "interval": "2s", "restart": {"unit": "vvault", "grace": "500ms"}}}


def vendor_bodies(hook) -> list[dict]:
    return [b for b in hook.bodies if str(b.get("dedup_key", "")).startswith("monitord-vendor-")]


def test_every_step_in_order_then_the_vendor_then_level_3(fleet, HOST, program, appliance_vm, vendor_hook):
    ssh, name, start = program
    appliance(fleet, HOST, program, appliance_vm, vendor_hook, service_check(program))
    subprocess.run(start, shell=True, check=True)
    daemon = fleet.start(remediation={"ladder": LADDER})
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="vvault") == 1, 20, "process up")
    subprocess.run(["pkill", "-KILL", "-x", name], check=True)
    wait_for(lambda: "sla_started engineer_on_site" in ladder(daemon, "nas1"), 60, "level 3")
    time.sleep(2)  # nothing more happens
    assert ladder(daemon, "nas1") == [
        "decided service_restart", "outcome service_restart failed", "decided power_cycle", "outcome power_cycle ok",
        "decided wait_boot", "outcome wait_boot ok", "decided verify", "outcome verify failed", "page vendor",
        "page dispatch", "sla_started engineer_on_site"]
    assert [c for c in ssh.calls() if c.startswith("systemctl restart")] == ["systemctl restart vvault"]
    assert appliance_vm.lifecycle("nas1") == ["stopped:destroyed", "started"]  # one VM restart
    [body] = vendor_bodies(vendor_hook)  # the vendor once, though the dispatch page follows
    [(incident_id, *_)] = daemon.incidents()
    assert body["dedup_key"] == f"monitord-vendor-iaas-incident-{incident_id}"
    assert [e["decision"] for e in journal(daemon) if e["event"] == "vendor_escalated"] == ["iaas"]
    assert daemon.value("monitord_actions_total", kind="service_restart", outcome="failed") == 1
    assert daemon.value("monitord_actions_total", kind="power_cycle", outcome="ok") == 1


def test_a_process_check_skips_the_service_step_and_its_restart_ends_the_ladder(fleet, HOST, program, appliance_vm,
                                                                                 vendor_hook):
    ssh, name, start = program
    appliance(fleet, HOST, program, appliance_vm, vendor_hook, {"agent": {
        "kind": "process", "name": name, "interval": "2s",
        "restart": {"kill_command": f"pkill -x {name}", "start_command": start, "grace": "500ms"}}})
    subprocess.run(start, shell=True, check=True)
    daemon = fleet.start(remediation={"ladder": LADDER})
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="agent") == 1, 20, "process up")
    subprocess.run(["pkill", "-KILL", "-x", name], check=True)
    wait_for(lambda: "resolved" in ladder(daemon, "nas1"), 30, "the process restart to be verified")
    assert ladder(daemon, "nas1") == ["decided service_restart", "outcome service_restart ok", "resolved"]
    assert len((ssh.state / "started").read_text().split()) == 2  # ours, then exactly one restart
    assert ssh.calls() == [] and appliance_vm.lifecycle("nas1") == [] and vendor_bodies(vendor_hook) == []


@pytest.mark.parametrize("guard", ["dry_run", "maintenance"])
def test_guards_hold_every_step(fleet, HOST, program, appliance_vm, vendor_hook, guard):
    ssh, name, start = program
    appliance(fleet, HOST, program, appliance_vm, vendor_hook, service_check(program))
    subprocess.run(start, shell=True, check=True)
    daemon = fleet.start(*(["--dry-run"] if guard == "dry_run" else []), remediation={"ladder": LADDER})
    if guard == "maintenance":
        daemon.cli("maintenance", "add", "--host", "nas1", "--duration", "1h", "--reason", "VM migration")
    wait_for(lambda: daemon.value("monitord_probe_success", host="nas1", check="vvault") == 1, 20, "process up")
    subprocess.run(["pkill", "-KILL", "-x", name], check=True)
    wait_for(lambda: f"blocked {guard}" in ladder(daemon, "nas1"), 30, f"the {guard} guard")
    time.sleep(3)
    assert [e for e in ladder(daemon, "nas1") if e.split()[0] in ("decided", "outcome", "page")] == []
    assert ssh.calls() == [] and appliance_vm.lifecycle("nas1") == [] and vendor_bodies(vendor_hook) == []
