"""The SNMP PDU power driver against a simulated APC PDU (snmpd + pass_persist), plus unit
tests of model selection and the ``pdu`` config block."""

from __future__ import annotations

import asyncio
import socket
import time
import typing

import pydantic
import pytest

from monitord.config import PduConfig
from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState, PowerTimings, power_change
from remediation.pdu import MODELS, PduDriver, model_for_sys_object_id, parse_oid
from tests.pdu_peer import PduSim

integration = pytest.mark.integration

TIMINGS = PowerTimings(power_wait=0.2, power_timeout=10, poll_interval=0.2)
FAST = {"timeout": 0.3, "retries": 1}
"""SNMP timeout and retries for tests that expect no answer."""
PATIENT = {"timeout": 30.0, "retries": 0}
"""For tests that expect the agent's answer at once: a timeout no loaded machine reaches first."""

RPDU_STATUS = ".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4"
SPDU_CTL = ".1.3.6.1.4.1.318.1.1.4.4.2.1.3"


def generic(**table) -> dict:
    """A generic-model override: rPDU status read, sPDU control written (APC's values)."""
    values = {"status_oid": RPDU_STATUS, "control_oid": SPDU_CTL, "control_on": 1, "control_off": 2,
              "control_reboot": 3, "status_on": 1, "status_off": 2} | table
    return {"model": "generic", "table": values}


async def expect_error(reason: Reason, call: typing.Awaitable) -> ActionError:
    """Await ``call``, which must raise ActionError with ``reason``; return the error."""
    with pytest.raises(ActionError) as caught:
        await call
    assert caught.value.reason is reason, caught.value.summary
    return caught.value


# -- power actions


@integration
async def test_status_reads_on(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1)) as driver:
        assert await driver.status() is PowerState.ON
    assert pdu_sim.commands(1) == []


@integration
async def test_command_off_then_status_off(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(2)) as driver:
        await driver.command(PowerAction.OFF)
        assert await driver.status() is PowerState.OFF
    assert pdu_sim.commands(2) == ["off"]
    assert pdu_sim.commands(1) == []


@integration
async def test_reset_reboots_once_and_waits_for_power(make_pdu_sim):
    sim = make_pdu_sim(reboot_seconds=1.0)
    async with PduDriver.from_config(sim.v2c(3)) as driver:
        outcome = await power_change(driver, PowerAction.RESET, TIMINGS)
    assert outcome.acted and outcome.final is PowerState.ON and outcome.attempts == 1
    assert sim.commands(3) == ["reboot"]
    assert sim.power_changes(3) == ["off", "on"]  # the poll saw it off (pending), then waited for on


@integration
async def test_off_when_already_off_sends_nothing(make_pdu_sim):
    sim = make_pdu_sim(initial={4: "off"})
    async with PduDriver.from_config(sim.v2c(4)) as driver:
        outcome = await power_change(driver, PowerAction.OFF, TIMINGS)
    assert not outcome.acted and outcome.final is PowerState.OFF and outcome.attempts == 0
    assert sim.commands(4) == []


@integration
async def test_cycle_is_off_then_on(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(5)) as driver:
        outcome = await power_change(driver, PowerAction.CYCLE, TIMINGS)
    assert outcome.acted and outcome.final is PowerState.ON
    assert pdu_sim.commands(5) == ["off", "on"]


@integration
async def test_reset_of_an_off_outlet_powers_it_on(make_pdu_sim):
    sim = make_pdu_sim(initial={1: "off"})
    async with PduDriver.from_config(sim.v2c(1)) as driver:
        outcome = await power_change(driver, PowerAction.RESET, TIMINGS)
    assert outcome.final is PowerState.ON
    assert sim.commands(1) == ["on"]


@integration
async def test_hooks_run_on_each_power_change(make_pdu_sim, tmp_path):
    record = tmp_path / "hooks.txt"
    line = f'echo "$HOOK $OUTLET $STATE" >> {record}'
    slow = f"sleep 0.2; {line}"  # hooks run one at a time: on_off waits for it
    sim = make_pdu_sim(reboot_seconds=0.5, hooks={"on_off": line, "on_on": line, "on_reboot": slow})
    async with PduDriver.from_config(sim.v2c(6)) as driver:
        await power_change(driver, PowerAction.RESET, TIMINGS)
    deadline = time.monotonic() + 5
    while len(record.read_text().splitlines() if record.exists() else []) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert record.read_text().splitlines() == ["on_reboot 6 on", "on_off 6 off", "on_on 6 on"]


# -- model selection


@integration
@pytest.mark.parametrize("kind, model, table", [("spdu", "apc-spdu", "spdu"), ("rpdu", "apc-rpdu", "rpdu")])
async def test_auto_model_by_sys_object_id(make_pdu_sim, kind, model, table):
    sim = make_pdu_sim(kind=kind)
    async with PduDriver.from_config(sim.v2c(1)) as driver:
        assert await driver.model() == model
        await power_change(driver, PowerAction.OFF, TIMINGS)
    assert [(e["command"], e["table"]) for e in sim.events() if e["event"] == "command"] == [("off", table)]


@integration
async def test_explicit_model_is_used_without_asking(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, model="apc-spdu")) as driver:
        assert await driver.model() == "apc-spdu"
        await driver.command(PowerAction.OFF)
    assert [e["table"] for e in pdu_sim.events() if e["event"] == "command"] == ["spdu"]


@integration
async def test_unknown_sys_object_id_is_refused_before_any_command(make_pdu_sim):
    sim = make_pdu_sim(sys_object_id=".1.3.6.1.4.1.318.1.3.4.6")  # rPDU2: not chosen automatically
    async with PduDriver.from_config(sim.v2c(1)) as driver:
        error = await expect_error(Reason.PROTOCOL, power_change(driver, PowerAction.RESET, TIMINGS))
    assert ".1.3.6.1.4.1.318.1.3.4.6" in error.summary
    assert sim.events() == []


@integration
async def test_generic_table_from_config(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(7, **generic())) as driver:
        assert await driver.model() == "generic"
        outcome = await power_change(driver, PowerAction.CYCLE, TIMINGS)
    assert outcome.acted and outcome.final is PowerState.ON
    assert [(e["command"], e["table"]) for e in pdu_sim.events() if e["event"] == "command"] == [
        ("off", "spdu"), ("on", "spdu")]


@integration
async def test_generic_table_without_reboot_refuses_reset(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, **generic(control_reboot=None))) as driver:
        await expect_error(Reason.ERROR, driver.command(PowerAction.RESET))
    assert pdu_sim.events() == []


# -- SNMP versions and credentials


@integration
@pytest.mark.parametrize("user", ["opsha", "opsha256", "opmd5", "opauth"])
async def test_v3_with_right_keys(pdu_sim: PduSim, user):
    async with PduDriver.from_config(pdu_sim.v3(user, outlet=2)) as driver:
        assert await driver.status() is PowerState.ON
        await driver.command(PowerAction.OFF)
        assert await driver.status() is PowerState.OFF
    assert pdu_sim.commands(2) == ["off"]


@integration
async def test_v3_command_as_first_request_is_carried_out_once(pdu_sim: PduSim):
    # No read before: the SET itself triggers engine discovery, and must still act exactly once.
    async with PduDriver.from_config(pdu_sim.v3("opsha", outlet=3, model="apc-rpdu")) as driver:
        await driver.command(PowerAction.OFF)
    assert pdu_sim.commands(3) == ["off"]


@integration
async def test_v3_wrong_auth_key_is_auth(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v3("opsha", auth_key="not-the-key"), **PATIENT) as driver:
        started = time.monotonic()
        error = await expect_error(Reason.AUTH, power_change(driver, PowerAction.RESET, TIMINGS))
    assert time.monotonic() - started < PATIENT["timeout"]  # the agent reports it; nothing waits for a timeout
    assert "digest" in error.summary.lower()
    assert pdu_sim.events() == []


@integration
async def test_v3_unknown_user_is_auth(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v3("nobody"), **PATIENT) as driver:
        error = await expect_error(Reason.AUTH, driver.status())
    assert "user" in error.summary.lower()


@integration
async def test_v3_wrong_priv_key_is_timeout(pdu_sim: PduSim):
    # The message authenticates, but decrypts to garbage that net-snmp drops without a report.
    async with PduDriver.from_config(pdu_sim.v3("opsha", priv_key="not-the-key"), **FAST) as driver:
        await expect_error(Reason.TIMEOUT, driver.status())


@integration
async def test_v2c_wrong_community_is_timeout_and_quick(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, community="guess"), timeout=0.3, retries=0) as driver:
        started = time.monotonic()
        error = await expect_error(Reason.TIMEOUT, driver.status())
    assert time.monotonic() - started < 1.5
    assert "community" in error.summary


@integration
async def test_read_only_community_cannot_switch(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, community="public")) as driver:
        assert await driver.status() is PowerState.ON
        error = await expect_error(Reason.AUTH, driver.command(PowerAction.OFF))
    assert "noAccess" in error.summary
    assert pdu_sim.events() == []


@integration
async def test_stopped_agent_is_timeout_and_leaves_nothing_running(pdu_sim: PduSim):
    backend = pdu_sim.backend_pid()
    assert backend is not None
    pdu_sim.stop()
    async with PduDriver.from_config(pdu_sim.v2c(1), **FAST) as driver:
        await expect_error(Reason.TIMEOUT, driver.status())
    assert _gone(backend)


# -- answers the driver must not misread


@integration
async def test_bad_value_written_is_protocol(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, **generic(control_off=9))) as driver:
        error = await expect_error(Reason.PROTOCOL, power_change(driver, PowerAction.OFF, TIMINGS))
    assert "wrongValue" in error.summary
    assert pdu_sim.events() == []


@integration
async def test_read_only_column_is_not_writable(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, **generic(control_oid=RPDU_STATUS))) as driver:
        error = await expect_error(Reason.AUTH, driver.command(PowerAction.OFF))
    assert "notWritable" in error.summary
    assert pdu_sim.events() == []


@integration
async def test_state_value_outside_the_table_is_protocol(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(1, **generic(status_on=5, status_off=6))) as driver:
        error = await expect_error(Reason.PROTOCOL, driver.status())
    assert "reads 1" in error.summary


@integration
async def test_missing_outlet_is_protocol(pdu_sim: PduSim):
    async with PduDriver.from_config(pdu_sim.v2c(99)) as driver:
        error = await expect_error(Reason.PROTOCOL, power_change(driver, PowerAction.RESET, TIMINGS))
    assert "noSuchInstance" in error.summary
    assert pdu_sim.events() == []


@integration
async def test_close_leaves_no_tasks(pdu_sim: PduSim):
    driver = PduDriver.from_config(pdu_sim.v2c(1))
    before = asyncio.all_tasks()
    await driver.status()
    await driver.aclose()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
    with pytest.raises(RuntimeError):
        await driver.status()


# -- unit tests: no peers


async def test_commands_are_sent_once_and_reads_retried(monkeypatch):
    """A lost answer to a SET must not become a second reboot: count the datagrams a silent
    agent receives."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        config = PduConfig.model_validate({"address": "127.0.0.1", "port": silent.getsockname()[1], "outlet": 1,
                                           "model": "apc-spdu", "community": {"env": "PDU_TEST_COMMUNITY"}})
        monkeypatch.setenv("PDU_TEST_COMMUNITY", "private")
        async with PduDriver.from_config(config, timeout=0.2, retries=2) as driver:
            started = time.monotonic()
            await expect_error(Reason.TIMEOUT, driver.command(PowerAction.RESET))
            assert time.monotonic() - started >= 0.55  # one send, the whole read budget (3 x 0.2 s)
            assert _drain(silent) == 1
            await expect_error(Reason.TIMEOUT, driver.status())
            assert _drain(silent) == 3


def _drain(sock: socket.socket) -> int:
    """How many datagrams wait on ``sock`` (they are read and dropped)."""
    count = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return count
        count += 1


def test_sys_object_id_prefix_matches_whole_arcs():
    assert model_for_sys_object_id(parse_oid(".1.3.6.1.4.1.318.1.3.4.5")) == "apc-rpdu"
    assert model_for_sys_object_id(parse_oid(".1.3.6.1.4.1.318.1.3.4.5.1")) == "apc-rpdu"
    assert model_for_sys_object_id(parse_oid(".1.3.6.1.4.1.318.1.3.4.2")) == "apc-spdu"
    assert model_for_sys_object_id(parse_oid(".1.3.6.1.4.1.318.1.3.4.50")) is None
    assert model_for_sys_object_id(parse_oid(".1.3.6.1.4.1.318.1.3.4.6")) is None
    assert model_for_sys_object_id(parse_oid(".1.3.6.1.4.1.8072.3.2.10")) is None


def test_config_model_names_are_the_built_in_models():
    choices = set(typing.get_args(PduConfig.model_fields["model"].annotation))
    assert choices == set(MODELS) | {"auto", "generic"}


BASE = {"address": "192.0.2.9", "outlet": 1, "community": {"env": "X"}}


@pytest.mark.parametrize("extra, message", [
    ({"model": "generic"}, "model generic needs a table"),
    ({"table": generic()["table"]}, "model generic needs a table"),
    ({**generic(status_off=1)}, "status_on and status_off must differ"),
    ({**generic(control_reboot=2)}, "control_on, control_off and control_reboot must differ"),
    ({**generic(status_oid="1.3.6.x")}, "String should match pattern"),
    ({"model": "apc-sdpu"}, "Input should be 'auto', 'apc-spdu', 'apc-rpdu' or 'generic'"),
])
def test_pdu_config_rejects(extra, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        PduConfig.model_validate(BASE | extra)


def test_pdu_config_generic_table_needs_every_value():
    table = generic()["table"]
    del table["status_off"]
    with pytest.raises(pydantic.ValidationError, match="status_off"):
        PduConfig.model_validate(BASE | {"model": "generic", "table": table})


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` has exited (a zombie awaiting PID 1 counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
