"""The libvirt VM power driver against a real libvirt: libvirtd serving the test hypervisor
(lifecycle events counted by a watcher connection, tests/libvirt_peer.py), and the in-process
test driver loaded from an XML file for credentials. Plus the ``vm:`` config block."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitord.config import ConfigError, HostConfig, VmConfig, parse_config
from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState, PowerTimings, power_change
from remediation.drivers import Drivers
from remediation.vm import VmDriver
from tests.libvirt_peer import Hypervisor

integration = pytest.mark.integration

TIMINGS = PowerTimings(power_wait=0.05, power_timeout=5, poll_interval=0.05)
UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"


def vm(hv: Hypervisor, domain: str = "appliance", **extra) -> VmConfig:
    return VmConfig(uri=hv.uri, domain=domain, **extra)


async def settle(hv: Hypervisor, name: str, count: int) -> list[str]:
    """The domain's lifecycle events once ``count`` of them have arrived (events are asynchronous)."""
    for _ in range(200):
        if len(hv.lifecycle(name)) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # and nothing more after them
    return hv.lifecycle(name)


@pytest.fixture
def appliance(hypervisor: Hypervisor) -> Hypervisor:
    hypervisor.add_domain("appliance", UUID)
    return hypervisor


@integration
async def test_status_follows_the_domain(appliance):
    appliance.add_domain("spare", "5dea22b3-1d52-d8f3-2516-782e98ab3fa0", running=False)
    async with VmDriver(vm(appliance)) as on, VmDriver(vm(appliance, "spare")) as off:
        assert await on.status() is PowerState.ON
        assert await off.status() is PowerState.OFF


@integration
async def test_domain_by_uuid(appliance):
    async with VmDriver(vm(appliance, UUID)) as driver:
        await driver.command(PowerAction.OFF)
    assert await settle(appliance, "appliance", 1) == ["stopped:destroyed"]


@integration
async def test_cycle_stops_then_starts_the_domain_once(appliance):
    async with VmDriver(vm(appliance)) as driver:
        outcome = await power_change(driver, PowerAction.CYCLE, TIMINGS)
    assert await settle(appliance, "appliance", 2) == ["stopped:destroyed", "started"]
    assert outcome.acted and outcome.final is PowerState.ON and appliance.active("appliance")


@integration
async def test_reset_keeps_the_domain_running(appliance):
    async with VmDriver(vm(appliance)) as driver:
        outcome = await power_change(driver, PowerAction.RESET, TIMINGS)
    assert "vm: sent reset (attempt 1)" in outcome.steps
    assert await settle(appliance, "appliance", 0) == []  # a reset is not a stop and start
    assert appliance.active("appliance")


@integration
async def test_reset_of_a_stopped_domain_starts_it(appliance):
    appliance.stop_domain("appliance")
    async with VmDriver(vm(appliance)) as driver:
        outcome = await power_change(driver, PowerAction.RESET, TIMINGS)
    assert await settle(appliance, "appliance", 1) == ["started"]
    assert "vm: machine is off, powering on instead of resetting" in outcome.steps


@integration
async def test_off_when_already_off_sends_nothing(appliance):
    appliance.stop_domain("appliance")
    async with VmDriver(vm(appliance)) as driver:
        outcome = await power_change(driver, PowerAction.OFF, TIMINGS)
    assert not outcome.acted and await settle(appliance, "appliance", 0) == []


@integration
async def test_graceful_shutdown_when_a_deadline_is_set(appliance):
    async with VmDriver(vm(appliance, shutdown_timeout=5)) as driver:
        outcome = await power_change(driver, PowerAction.OFF, TIMINGS)
    assert outcome.final is PowerState.OFF
    assert await settle(appliance, "appliance", 1) == ["stopped:shutdown"]  # the guest shut down, not pulled


@integration
async def test_unknown_domain_is_a_typed_error(appliance):
    with pytest.raises(ActionError) as caught:
        async with VmDriver(vm(appliance, "nosuchvm")):
            pass
    assert caught.value.reason is Reason.ERROR and "nosuchvm" in caught.value.summary


@integration
async def test_no_hypervisor_is_unreachable(tmp_path):
    config = VmConfig(uri=f"test+unix:///default?socket={tmp_path}/nothing", domain="appliance")
    with pytest.raises(ActionError) as caught:
        async with VmDriver(config):
            pass
    assert caught.value.reason is Reason.UNREACHABLE and not caught.value.maybe_done


@integration
async def test_drivers_builds_the_vm_driver_by_name(appliance):
    host = HostConfig(address="127.0.0.1", vm=vm(appliance))
    assert host.power_drivers() == ("vm",)
    async with Drivers().power("vm", host.vm) as driver:
        assert driver.name == "vm" and await driver.status() is PowerState.ON


# -- credentials, with the in-process test driver loaded from a file that demands a login


def auth_node(tmp_path: Path) -> str:
    path = tmp_path / "node.xml"
    path.write_text(f"""<node><domain type='test'><name>appliance</name><uuid>{UUID}</uuid><memory>65536</memory>
<os><type>hvm</type></os></domain><auth><user password='s3cret'>admin</user></auth></node>""")
    return f"test://{path}"


def secret(tmp_path: Path, value: str) -> dict:
    path = tmp_path / "vm.secret"
    path.write_text(value + "\n")
    return {"file": path}


async def test_password_from_a_secret_file_logs_in(tmp_path):
    config = VmConfig(uri=auth_node(tmp_path), domain="appliance", username="admin", password=secret(tmp_path, "s3cret"))
    async with VmDriver(config) as driver:
        assert await driver.status() is PowerState.ON


async def test_wrong_password_is_auth_and_never_shown(tmp_path):
    config = VmConfig(uri=auth_node(tmp_path), domain="appliance", username="admin", password=secret(tmp_path, "wrong-pw"))
    with pytest.raises(ActionError) as caught:
        async with VmDriver(config):
            pass
    assert caught.value.reason is Reason.AUTH and "wrong-pw" not in caught.value.summary


async def test_an_unreadable_password_file_is_a_typed_error(tmp_path):
    config = VmConfig(uri=auth_node(tmp_path), domain="appliance", username="admin",
                      password={"file": tmp_path / "absent.secret"})
    with pytest.raises(ActionError) as caught:
        async with VmDriver(config):
            pass
    assert caught.value.reason is Reason.ERROR and "absent.secret" in caught.value.summary


async def test_missing_credentials_fail_at_once(tmp_path):
    with pytest.raises(ActionError) as caught:
        async with VmDriver(VmConfig(uri=auth_node(tmp_path), domain="appliance")):
            pass
    assert caught.value.reason is Reason.AUTH


# -- the shutdown deadline (pure logic: the test hypervisor's guests always obey ACPI)


class DeafGuest:
    """A domain whose guest ignores the shutdown request; only destroy() stops it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active = 1

    def isActive(self) -> int:  # noqa: N802 - libvirt's name
        return self.active

    def shutdown(self) -> int:
        self.calls.append("shutdown")
        return 0

    def destroy(self) -> int:
        self.calls.append("destroy")
        self.active = 0
        return 0


async def test_a_guest_that_ignores_shutdown_is_forced_off_at_the_deadline():
    driver = VmDriver(VmConfig(uri="test:///default", domain="x", shutdown_timeout=0.1))
    driver._domain = guest = DeafGuest()
    assert await driver.shutdown(0.1) is False
    assert guest.calls == ["shutdown", "destroy"]


# -- config


def test_vm_block_in_a_host_orders_the_fallback_chain():
    config = parse_config("""
hosts:
  nas1:
    address: 127.0.0.1
    vm: {uri: "qemu+ssh://root@hv1/system", domain: nas1, key_file: /etc/monitord/hv1.key, shutdown_timeout: 2m}
    pdu: {address: 127.0.0.1, outlet: 1, community: {env: PDU}}
""")
    host = config.hosts["nas1"]
    assert host.power_drivers() == ("vm", "pdu")
    assert host.vm.shutdown_timeout == 120
    assert VmDriver(host.vm)._uri() == "qemu+ssh://root@hv1/system?keyfile=/etc/monitord/hv1.key"


@pytest.mark.parametrize("uri,problem", [
    ("qemu+ssh://root:hunter2@hv1/system", "no password in the URI"),
    ("hv1", "not a libvirt URI"),
])
def test_bad_vm_uri_is_a_config_error(uri, problem):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"hosts:\n  nas1:\n    address: 127.0.0.1\n    vm: {{uri: '{uri}', domain: nas1}}\n")
    assert caught.value.problems == [f"hosts.nas1.vm.uri: {problem}" + (
        ": give password as {file: ...}, {env: ...} or {credential: ...}" if "password" in problem
        else f": {uri!r} (e.g. qemu+ssh://root@hv1/system)") + " (line 4)"]


@integration
async def test_quarantine_pulls_the_plug_even_with_a_shutdown_deadline(appliance, tmp_path):
    """A compromised guest is powered off at once (emergency power-off), never asked to shut down."""
    from monitord.escalation.quarantine import quarantine

    config = parse_config(f"""
daemon: {{state_path: {tmp_path / 'state.db'}}}
hosts:
  nas1:
    address: 127.0.0.1
    vm: {{uri: "{appliance.uri}", domain: appliance, shutdown_timeout: 5m}}
""")
    powered_off, summary = await quarantine(config, "nas1", "intrusion", "test")
    assert powered_off, summary
    assert await settle(appliance, "appliance", 1) == ["stopped:destroyed"]
    assert not appliance.active("appliance")
