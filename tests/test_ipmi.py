"""The IPMI power driver: parsers and failure texts offline, then against a real ipmi_sim BMC.

The integration tests count what reached the simulated hardware through the chassis_control
calls log (``tests/ipmi_peer.py``): a false or repeated power command is the worst thing
monitord can do.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from monitord.config import BmcConfig
from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState, PowerTimings, power_change
from remediation.ipmi import (
    BmcHealth,
    IpmiDriver,
    SelEntry,
    SensorReading,
    SensorStatus,
    classify_failure,
    complaints,
    parse_power_status,
    parse_sel,
    parse_sensor_report,
    parse_sensors,
)
from tests.ipmi_peer import IPMI_PASSWORD, IPMI_USER, IpmiSim
from tests.support import free_port


integration = pytest.mark.integration
FAST = PowerTimings(power_wait=0.2, power_timeout=5, poll_interval=0.2)

# stderr of ipmitool 1.8.19 -v against ipmi_sim 1.0.13, as recorded
WRONG_PASSWORD = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n"
UNKNOWN_USER = (
    "Loading IANA PEN Registry...\nRAKP 2 message indicates an error : unauthorized name\n"
    "Error: Unable to establish IPMI v2 / RMCP+ session\n"
)
NO_BMC = (
    "Loading IANA PEN Registry...\nGet Auth Capabilities error\n"
    "Error issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n"
)
BAD_CIPHER = (
    "Loading IANA PEN Registry...\nError in open session response message : invalid authentication algorithm\n\n"
    "Error: Unable to establish IPMI v2 / RMCP+ session\n"
)
NO_PRIVILEGE = (
    "Invalid completion code received: Insufficient privilege level\n"
    "Set Chassis Power Control to Up/On failed: Insufficient privilege level\n"
)
NO_HOST = "Address lookup for no.such.host.invalid failed\nCould not open socket!\nError: Unable to establish IPMI v2 / RMCP+ session\n"
AMBIGUOUS = "Error: Unable to establish IPMI v2 / RMCP+ session\n"  # without -v: wrong password and no BMC alike

SENSOR_OUTPUT = """\
Temp             | 149.000    | degrees C  | cr    | na        | na        | na        | 112.000   | 144.000   | 160.000   
Fan1             | 1200.000   | RPM        | ok    | 300.000   | 500.000   | na        | na        | na        | na        
PS Status        | 0x0        | discrete   | 0x0180| na        | na        | na        | na        | na        | na        
CPU2 Temp        | na         | degrees C  | na    | na        | na        | na        | 85.000    | 90.000    | 95.000    
"""
SEL_OUTPUT = """\
   1 |  Pre-Init  |0000002117| Temperature Temp | Upper Non-critical going high | Asserted | Reading 149 > Threshold 112 degrees C
   a | 05/14/2024 | 10:22:01 | Memory #0x05 | Uncorrectable ECC | Asserted
  1f | 05/14/2024 | 10:23:00 | OEM record e0 | 00000000040f
"""


def driver_for(sim: IpmiSim, password: str | None = None, **kwargs) -> IpmiDriver:
    """A driver for ``sim`` with short ipmitool waits (the simulator answers in milliseconds)."""
    options = {"ipmi_timeout": 1, "retries": 2, "timeout": 15.0} | kwargs
    return IpmiDriver("127.0.0.1", sim.port, sim.username, password or sim.password, 3, "administrator", **options)


def ipmitool_children() -> list[int]:
    """PIDs of this process's ipmitool children, running or zombie."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if comm == "ipmitool" and ppid == os.getpid():
            found.append(int(stat.parent.name))
    return found


# --------------------------------------------------------------------------- offline


def test_password_is_never_on_argv() -> None:
    driver = IpmiDriver("bmc.example", 623, "admin", "s3cr3t-Pa55", timeout=5)
    for command in (["chassis", "power", "status"], ["chassis", "power", "reset"], ["sel", "elist"], ["sensor"]):
        for verbose in (False, True):
            for once in (False, True):
                argv = driver.argv(command, verbose=verbose, once=once)
                assert not any("s3cr3t" in arg for arg in argv)
                assert "-E" in argv and "-P" not in argv
    assert driver._env()["IPMI_PASSWORD"] == "s3cr3t-Pa55"
    assert "s3cr3t" not in repr(driver)


def test_argv_options() -> None:
    driver = IpmiDriver("10.0.0.9", 6230, "root", "x", cipher_suite=17, privilege="operator", ipmi_timeout=2, retries=3)
    read = driver.argv(["chassis", "power", "status"], verbose=True)
    assert read == [
        "ipmitool", "-I", "lanplus", "-H", "10.0.0.9", "-p", "6230", "-U", "root", "-E", "-C", "17",
        "-L", "OPERATOR", "-N", "2", "-R", "3", "-v", "chassis", "power", "status",
    ]
    once = driver.argv(["chassis", "power", "reset"], once=True)
    # a command is never retransmitted; its one try waits as long as the read's three (2+3+4 s)
    assert once[once.index("-R") + 1] == "1" and once[once.index("-N") + 1] == "9"


def test_constructor_rejects_ipmitool_defaults_and_unknown_privilege() -> None:
    with pytest.raises(ValueError):
        IpmiDriver("h", 623, "u", "p", retries=0)  # -R 0 would mean ipmitool's default (20 s waits)
    with pytest.raises(ValueError):
        IpmiDriver("h", 623, "u", "p", privilege="user")


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (WRONG_PASSWORD, Reason.AUTH),
        (UNKNOWN_USER, Reason.AUTH),
        (NO_PRIVILEGE, Reason.AUTH),
        (NO_BMC, Reason.TIMEOUT),
        ("Unable to get Chassis Power Status\n", Reason.TIMEOUT),
        (BAD_CIPHER, Reason.PROTOCOL),
        (NO_HOST, Reason.UNREACHABLE),
        (AMBIGUOUS, None),
        ("Set Chassis Power Control to Reset failed: Invalid data field in request\n", None),
    ],
)
def test_classify_failure(stderr: str, reason: Reason | None) -> None:
    assert classify_failure(stderr) is reason


def test_parse_power_status() -> None:
    assert parse_power_status("Chassis Power is on\n") is PowerState.ON
    assert parse_power_status("Chassis Power is off\n") is PowerState.OFF
    with pytest.raises(ActionError) as info:
        parse_power_status("Chassis Power is sleepy\n")
    assert info.value.reason is Reason.PROTOCOL


def test_parse_sensors() -> None:
    temp, fan, psu, cpu2 = parse_sensors(SENSOR_OUTPUT)
    assert temp == SensorReading("Temp", 149.0, "degrees C", SensorStatus.CR, {"unc": 112.0, "ucr": 144.0, "unr": 160.0})
    assert fan.status is SensorStatus.OK and fan.thresholds == {"lnr": 300.0, "lcr": 500.0}
    assert psu.value is None and psu.status is SensorStatus.NA and not psu.status.problem
    assert cpu2.value is None and cpu2.status is SensorStatus.NA
    assert parse_sensors("") == []
    for garbage in ("Temp | 149 | degrees C | hot | na\n", "Temp | warm | degrees C | ok\n", "Temp | 1\n"):
        with pytest.raises(ActionError) as info:
            parse_sensors(garbage)
        assert info.value.reason is Reason.PROTOCOL


def test_parse_sel() -> None:
    first, second, oem = parse_sel(SEL_OUTPUT)
    assert first == SelEntry(
        1, "Pre-Init 0000002117", "Temperature Temp", "Upper Non-critical going high", "Asserted",
        "Reading 149 > Threshold 112 degrees C",
    )
    assert first.when is None
    assert second.id == 0xA and second.when is not None and second.when.hour == 10
    assert second.describe() == "Memory #0x05: Uncorrectable ECC (Asserted)"
    assert oem.id == 0x1F and oem.direction == "" and oem.describe() == "OEM record e0: 00000000040f"
    assert parse_sel("") == []
    with pytest.raises(ActionError) as info:
        parse_sel("zz | 05/14/2024 | 10:22:01 | Memory\n")
    assert info.value.reason is Reason.PROTOCOL


def test_health_summary() -> None:
    sel = tuple(parse_sel(SEL_OUTPUT))
    problems = tuple(s for s in parse_sensors(SENSOR_OUTPUT) if s.status.problem)
    health = BmcHealth(PowerState.ON, sel, problems, sel_requested=20)
    assert health.summary() == (
        "power on; 3 SEL events (last: OEM record e0: 00000000040f); sensors: 1 critical (Temp 149 C)"
    )
    assert BmcHealth(PowerState.OFF, (), (), 20).summary() == "power off; SEL empty; sensors ok"
    assert BmcHealth(PowerState.ON, sel[:2], (), 2).summary().startswith("power on; 2+ SEL events")
    unreadable = BmcHealth(PowerState.ON, None, (), 20, ("SEL unreadable (error: ipmitool sel elist: x)",))
    assert unreadable.summary() == "power on; sensors ok; SEL unreadable (error: ipmitool sel elist: x)"


def test_an_error_printed_with_exit_0_never_reads_as_sensors_ok() -> None:
    stderr = "Loading IANA PEN Registry...\nErr in cmd get sensor sdr info\nError: sensor 0x1f not present\n"
    assert complaints(stderr) == "Err in cmd get sensor sdr info; Error: sensor 0x1f not present"
    assert complaints("Loading IANA PEN Registry...\n") is None
    complained = BmcHealth(PowerState.ON, (), (), 20, ("sensors incomplete (ipmitool: Err in cmd get sensor sdr info)",),
                           sensors_complete=False)
    assert complained.summary() == "power on; SEL empty; sensors incomplete (ipmitool: Err in cmd get sensor sdr info)"
    problems = tuple(s for s in parse_sensors(SENSOR_OUTPUT) if s.status.problem)
    partial = BmcHealth(PowerState.ON, (), problems, 20, sensors_complete=False)
    assert "sensors: 1 critical (Temp 149 C)" in partial.summary() and "sensors ok" not in partial.summary()


# ipmitool 1.8.19 `sensor` against ipmi_sim 1.0.13 with a sensor but no SDR record (exit 0), as recorded
NO_SDR_STDOUT = "SDRR successfully erased\nErr in cmd get sensor sdr info\n"
NO_SDR_STDERR = "Get SDR 0000 command failed: Requested sensor, data, or record not found\n" * 5
NO_SDR_COMPLAINT = "Err in cmd get sensor sdr info; Get SDR 0000 command failed: Requested sensor, data, or record not found"


def test_a_sensor_without_sdr_is_a_complaint_on_stdout_and_stderr() -> None:
    assert parse_sensor_report(NO_SDR_STDOUT, NO_SDR_STDERR) == ([], NO_SDR_COMPLAINT)
    assert parse_sensor_report(NO_SDR_STDOUT, "")[1] == "Err in cmd get sensor sdr info"  # stdout alone says it
    readings, complaint = parse_sensor_report(SENSOR_OUTPUT + NO_SDR_STDOUT, "")
    assert readings == parse_sensors(SENSOR_OUTPUT) and complaint == "Err in cmd get sensor sdr info"
    assert parse_sensor_report(SENSOR_OUTPUT, "Loading IANA PEN Registry...\n") == (parse_sensors(SENSOR_OUTPUT), None)
    assert complaints("Error Count      | 0.000 | unspecified | ok | na | na | na | na | na | na\n") is None  # a row


def test_from_config_reads_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = BmcConfig(address="10.0.0.9", username="admin", password={"env": "TEST_IPMI_PW"})
    monkeypatch.setenv("TEST_IPMI_PW", "pw")
    driver = IpmiDriver.from_config(bmc)
    assert (driver.address, driver.port, driver.cipher_suite, driver.privilege) == ("10.0.0.9", 623, 3, "administrator")
    assert driver._env()["IPMI_PASSWORD"] == "pw"
    monkeypatch.delenv("TEST_IPMI_PW")
    with pytest.raises(ActionError) as info:
        IpmiDriver.from_config(bmc)
    assert info.value.reason is Reason.ERROR and "TEST_IPMI_PW" in info.value.summary


async def test_command_refuses_cycle() -> None:
    with pytest.raises(ValueError):
        await IpmiDriver("127.0.0.1", 1, "u", "p").command(PowerAction.CYCLE)


# --------------------------------------------------------------------------- against ipmi_sim


@integration
async def test_status_off_on_and_one_reset(ipmi_sim: IpmiSim) -> None:
    driver = driver_for(ipmi_sim)
    assert await driver.status() is PowerState.ON
    await driver.command(PowerAction.OFF)
    assert await driver.status() is PowerState.OFF and ipmi_sim.power() == "off"
    await driver.command(PowerAction.ON)
    assert await driver.status() is PowerState.ON
    await driver.command(PowerAction.RESET)
    assert await driver.status() is PowerState.ON
    assert ipmi_sim.commands() == ["off", "on", "reset"]


@integration
async def test_power_change_reset_sends_exactly_one_reset(ipmi_sim: IpmiSim) -> None:
    ipmi_sim.set_hook("reset", "echo reset-hook-ran")
    outcome = await power_change(driver_for(ipmi_sim), PowerAction.RESET, FAST)
    assert outcome.acted and outcome.final is PowerState.ON and outcome.attempts == 1
    assert ipmi_sim.commands() == ["reset"]
    assert ipmi_sim.hook_log() == "reset-hook-ran\n"


@integration
async def test_power_change_off_when_off_sends_nothing(make_ipmi_sim) -> None:
    sim = make_ipmi_sim(power_on=False)
    outcome = await power_change(driver_for(sim), PowerAction.OFF, FAST)
    assert not outcome.acted and outcome.final is PowerState.OFF
    assert sim.commands() == []


@integration
async def test_power_change_cycle_is_off_then_on(ipmi_sim: IpmiSim) -> None:
    outcome = await power_change(driver_for(ipmi_sim), PowerAction.CYCLE, FAST)
    assert outcome.acted and outcome.final is PowerState.ON
    assert ipmi_sim.commands() == ["off", "on"]


@integration
async def test_power_change_reset_of_off_machine_powers_on(make_ipmi_sim) -> None:
    sim = make_ipmi_sim(power_on=False)
    outcome = await power_change(driver_for(sim), PowerAction.RESET, FAST)
    assert outcome.acted and outcome.final is PowerState.ON
    assert sim.commands() == ["on"]


@integration
async def test_slow_bmc_gets_one_reset_not_a_retransmission(make_ipmi_sim) -> None:
    # the hook runs in the foreground, so the BMC answers the reset 2 s late; plain
    # "ipmitool -N 1 -R 3" retransmits and ipmi_sim then resets twice
    sim = make_ipmi_sim(hooks={"reset": "sleep 2"})
    await driver_for(sim, ipmi_timeout=1, retries=3).command(PowerAction.RESET)  # one try, waits 1+2+3 s
    assert sim.commands() == ["reset"]


@integration
async def test_lost_answer_to_a_reset_is_timeout_that_may_have_acted(make_ipmi_sim) -> None:
    sim = make_ipmi_sim(hooks={"reset": "sleep 2"})
    with pytest.raises(ActionError) as info:
        await driver_for(sim, ipmi_timeout=1, retries=1).command(PowerAction.RESET)  # waits 1 s
    assert info.value.reason is Reason.TIMEOUT
    assert "Unable to set Chassis Power Control to Reset" in info.value.summary
    assert "may have reached the BMC" in info.value.summary
    await asyncio.sleep(1.5)
    assert sim.commands() == ["reset"]  # it did act, exactly once


@integration
async def test_wrong_password_is_auth_and_sends_nothing(ipmi_sim: IpmiSim) -> None:
    driver = driver_for(ipmi_sim, password="not-the-password")
    calls = (driver.status, lambda: driver.command(PowerAction.RESET),
             lambda: power_change(driver, PowerAction.RESET, FAST), driver.sel, driver.sensors, driver.health)
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ActionError) as info:
            await call()
        assert info.value.reason is Reason.AUTH, info.value.summary
        assert time.monotonic() - started < 2  # rejected at once, not after retries
    assert "RAKP 2 HMAC is invalid" in info.value.summary
    assert ipmi_sim.commands() == []


@integration
async def test_unknown_user_is_auth(ipmi_sim: IpmiSim) -> None:
    driver = IpmiDriver("127.0.0.1", ipmi_sim.port, "nobody", IPMI_PASSWORD, ipmi_timeout=1, retries=1)
    with pytest.raises(ActionError) as info:
        await driver.status()
    assert info.value.reason is Reason.AUTH and "unauthorized name" in info.value.summary


@integration
async def test_unsupported_cipher_suite_is_protocol(ipmi_sim: IpmiSim) -> None:
    driver = IpmiDriver("127.0.0.1", ipmi_sim.port, IPMI_USER, IPMI_PASSWORD, cipher_suite=17, ipmi_timeout=1, retries=1)
    with pytest.raises(ActionError) as info:
        await driver.status()
    assert info.value.reason is Reason.PROTOCOL


@integration
async def test_stopped_bmc_is_timeout(ipmi_sim: IpmiSim) -> None:
    driver = driver_for(ipmi_sim, retries=1)
    assert await driver.status() is PowerState.ON
    ipmi_sim.stop()
    for call in (driver.status, lambda: driver.command(PowerAction.RESET), driver.sensors):
        with pytest.raises(ActionError) as info:
            await call()
        assert info.value.reason is Reason.TIMEOUT, info.value.summary
    assert ipmi_sim.commands() == []
    assert ipmitool_children() == []


@integration
async def test_process_timeout_kills_and_reaps_ipmitool(monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[asyncio.subprocess.Process] = []
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*args, **kwargs):
        proc = await real_exec(*args, **kwargs)
        spawned.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording_exec)
    silent_port = free_port(socket.SOCK_DGRAM)  # nothing answers; ipmitool alone would wait 10 s
    driver = IpmiDriver("127.0.0.1", silent_port, IPMI_USER, IPMI_PASSWORD, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        await driver.command(PowerAction.RESET)
    assert info.value.reason is Reason.TIMEOUT and "killed" in info.value.summary
    assert "may have reached the BMC" in info.value.summary
    assert time.monotonic() - started < 2
    (proc,) = spawned
    assert proc.returncode == -9  # SIGKILL, and waited for
    assert not Path(f"/proc/{proc.pid}").exists()  # reaped: no zombie
    assert ipmitool_children() == []


@integration
async def test_cancellation_kills_and_reaps_ipmitool() -> None:
    driver = IpmiDriver("127.0.0.1", free_port(socket.SOCK_DGRAM), IPMI_USER, IPMI_PASSWORD, timeout=30)
    task = asyncio.create_task(driver.status())
    await asyncio.sleep(0.3)
    assert len(ipmitool_children()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ipmitool_children() == []


@integration
async def test_sel_and_sensors_from_the_bmc(ipmi_sim: IpmiSim) -> None:
    driver = driver_for(ipmi_sim)
    assert await driver.sel() == []
    (temp,) = await driver.sensors()
    assert temp == SensorReading("Temp", 96.0, "degrees C", SensorStatus.OK, {"unc": 112.0, "ucr": 144.0, "unr": 160.0})
    record = ipmi_sim.add_sel(0x0C, 5, 0x01)
    (entry,) = await driver.sel()
    assert (entry.id, entry.sensor, entry.event, entry.direction) == (record, "Memory #0x05", "Uncorrectable ECC", "Asserted")
    assert (await driver.health()).summary() == (
        "power on; 1 SEL event (last: Memory #0x05: Uncorrectable ECC (Asserted)); sensors ok"
    )


@integration
async def test_sensors_without_sdr_read_as_incomplete(make_ipmi_sim) -> None:
    health = await driver_for(make_ipmi_sim(sdr=False)).health()
    assert health.summary() == f"power on; SEL empty; sensors incomplete (ipmitool: {NO_SDR_COMPLAINT})"


@integration
async def test_sensor_over_threshold_shows_in_health(ipmi_sim: IpmiSim) -> None:
    ipmi_sim.set_temperature(149)  # above ucr 144: two SEL records (unc, ucr going high)
    health = await driver_for(ipmi_sim).health(sel_last=5)
    assert health.power is PowerState.ON
    assert [(s.name, s.value, s.status) for s in health.problems] == [("Temp", 149.0, SensorStatus.CR)]
    assert [e.event for e in health.sel] == ["Upper Non-critical going high", "Upper Critical going high"]
    assert health.summary() == (
        "power on; 2 SEL events (last: Temperature Temp: Upper Critical going high (Asserted)); "
        "sensors: 1 critical (Temp 149 C)"
    )
    assert ipmi_sim.commands() == []


@integration
def test_stop_leaves_no_processes(make_ipmi_sim) -> None:
    sim = make_ipmi_sim(hooks={"off": "(sleep 60; echo late) &"})
    asyncio.run(driver_for(sim).command(PowerAction.OFF))
    assert sim.commands() == ["off"]
    group = [p for p in Path("/proc").glob("[0-9]*") if _pgid(p) == sim.pid]
    assert len(group) >= 2  # ipmi_sim and the hook's sleep
    sim.stop()
    deadline = time.monotonic() + 5
    while any(_pgid(p) == sim.pid and _state(p) != "Z" for p in Path("/proc").glob("[0-9]*")):
        assert time.monotonic() < deadline, "processes of ipmi_sim's group are still running"
        time.sleep(0.05)


def _stat_fields(proc_dir: Path) -> list[str]:
    try:
        text = (proc_dir / "stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


def _pgid(proc_dir: Path) -> int | None:
    fields = _stat_fields(proc_dir)
    return int(fields[2]) if fields else None


def _state(proc_dir: Path) -> str | None:
    fields = _stat_fields(proc_dir)
    return fields[0] if fields else None
