"""The ``bmc`` probe: rules and SEL bookkeeping offline, then against a real ipmi_sim BMC."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from monitord.config import BmcConfig, parse_config
from monitord.shared.fields import SecretRef
from monitord.shared.results import Reason, Result, Status, Ticket
from monitord.run.runner import run_probe
from probes import bmc
from monitord.shared.probe import ProbeCall, ProbeContext
from remediation.ipmi import SelEntry
from tests.ipmi_peer import IPMI_USER, IpmiSim

integration = pytest.mark.integration


def entry(id: int, sensor: str, event: str, direction: str = "Asserted") -> SelEntry:
    return SelEntry(id, "05/14/2024 10:22:01", sensor, event, direction)


@pytest.mark.parametrize(
    "sensor, event, direction, expected",
    [
        ("Power Supply #0x01", "Failure detected", "Asserted", "critical"),
        ("Fan #0x30", "Lower Critical going low", "Asserted", "critical"),
        ("Fan #0x30", "Lower Non-critical going low", "Asserted", None),
        ("Temperature Temp", "Upper Critical going high", "Asserted", "critical"),
        ("Temperature Temp", "Upper Non-critical going high", "Asserted", None),
        ("Temperature Temp", "Upper Critical going high", "Deasserted", None),
        ("Drive Slot / Bay #0x05", "Drive Fault", "Asserted", "ticket"),
        ("Drive Slot / Bay #0x06", "In Critical Array", "Asserted", "ticket"),
        ("Drive Slot / Bay #0x05", "Drive Present", "Asserted", None),
        ("Memory #0x05", "Correctable ECC", "Asserted", None),
    ],
)
def test_default_rules(sensor, event, direction, expected):
    rule = next((r for r in bmc.DEFAULT_SEL_RULES if r.matches(entry(1, sensor, event, direction))), None)
    if expected is None:
        assert rule is None
    elif expected == "ticket":
        assert rule.hardware_ticket and rule.severity == "warning"
    else:
        assert rule.severity == expected and not rule.hardware_ticket


def test_new_entries_after_the_remembered_one():
    a, b, c = entry(1, "Fan", "x"), entry(2, "Fan", "y"), entry(3, "Fan", "z")
    assert bmc.new_entries([a, b, c], {}) == ([], False)  # first run: a baseline
    assert bmc.new_entries([a, b, c], {"last_id": 2, "last_key": bmc._key(b)}) == ([c], True)
    assert bmc.new_entries([a, b, c], {"last_id": 3, "last_key": bmc._key(c)}) == ([], True)
    # the SEL was cleared and refilled: ids restart, the remembered record is gone
    assert bmc.new_entries([a], {"last_id": 2, "last_key": bmc._key(entry(2, "PSU", "q"))}) == ([a], True)
    assert bmc.new_entries([a], {"last_id": None, "last_key": None}) == ([a], True)  # was empty


def test_bad_rule_pattern_is_a_config_error():
    with pytest.raises(ValidationError, match="invalid regular expression"):
        bmc.BmcParams(extra_sel_rules=[{"sensor": "(unclosed"}])


def test_bmc_kind_needs_a_bmc_block():
    with pytest.raises(Exception) as info:
        parse_config("hosts:\n  web1:\n    address: 127.0.0.1\n    checks:\n      bmc: {}\n")
    assert "hosts.web1.checks.bmc.kind: kind bmc needs a bmc: block on the host" in str(info.value)


def test_one_shot_events_confirm_at_once_by_default():
    assert bmc.BmcParams().max_attempts == 1


# -- against ipmi_sim


class Bmc:
    """Runs the probe against one simulator, keeping state between runs like the daemon."""

    def __init__(self, sim: IpmiSim, state_dir: Path, password: str | None = None) -> None:
        secret = state_dir / "bmc-password"
        secret.write_text((password or sim.password) + "\n")
        self.bmc = BmcConfig(address="127.0.0.1", port=sim.port, username=IPMI_USER, password=SecretRef(file=secret))
        self.state_dir = state_dir

    async def run(self, **params) -> Result:
        ctx = ProbeContext(state_dir=self.state_dir)
        call = ProbeCall("web1", "127.0.0.1", 20.0, check="bmc", bmc=self.bmc)
        try:
            return await run_probe(bmc.KIND, ctx, call, bmc.BmcParams(**params), now=time.time())
        finally:
            await ctx.aclose()


@integration
async def test_healthy_bmc_is_ok_and_takes_a_sel_baseline(ipmi_sim: IpmiSim, tmp_path):
    ipmi_sim.add_sel(0x08, 1, 0x01)  # an old PSU failure, from before monitoring began
    probe = Bmc(ipmi_sim, tmp_path)
    first = await probe.run()
    assert first.status is Status.OK, first.summary
    assert "sensors ok" in first.summary and "SEL baseline taken (1 records on file)" in first.summary
    assert first.values["sensors"] >= 1 and first.ticket is None
    second = await probe.run()
    assert second.status is Status.OK and second.values["sel_new"] == 0
    assert (tmp_path / "bmc" / "web1" / "bmc" / "sel.json").exists()


@integration
async def test_sensors_ipmitool_cannot_read_are_unknown_never_ok(make_ipmi_sim, tmp_path):
    """Without its SDR record ipmitool prints 'Err in cmd get sensor sdr info' and exits 0."""
    result = await Bmc(make_ipmi_sim(sdr=False), tmp_path).run(sel=False)
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.PROTOCOL), result.summary
    assert result.summary.startswith("sensors incomplete (ipmitool: ") and "sensors ok" not in result.summary
    assert "Err in cmd get sensor sdr info" in result.summary


@integration
async def test_temperature_over_its_critical_threshold_is_critical(ipmi_sim: IpmiSim, tmp_path):
    probe = Bmc(ipmi_sim, tmp_path)
    assert (await probe.run()).ok
    ipmi_sim.set_temperature(120)  # past non-critical (112) only
    warm = await probe.run(sel=False)
    assert (warm.status, warm.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert warm.summary == "sensors: Temp 120 C (nc)"
    ipmi_sim.set_temperature(150)  # past critical (144)
    hot = await probe.run()
    assert (hot.status, hot.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert "Temp 150 C (cr)" in hot.summary
    assert "Temperature Temp: Upper Critical going high (Asserted)" in hot.summary  # its SEL record too
    assert hot.values["sensor_problems"] == 1 and not hot.summary.startswith(bmc.TICKET_PREFIX)


@integration
async def test_new_critical_sel_record_is_reported_once(ipmi_sim: IpmiSim, tmp_path):
    probe = Bmc(ipmi_sim, tmp_path)
    assert (await probe.run()).ok  # baseline
    record = ipmi_sim.add_sel(0x08, 1, 0x01)  # Power Supply #0x01 | Failure detected
    ipmi_sim.add_sel(0x0C, 5, 0x00)  # Memory | Correctable ECC: counted, not a concern
    result = await probe.run()
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert result.summary == f"1 new SEL record: #{record} Power Supply #0x01: Failure detected (Asserted)"
    assert result.values["sel_new"] == 2 and result.values["sel_critical"] == 1
    again = await probe.run()
    assert again.ok and again.values["sel_new"] == 0, again.summary
    # the kept position survives a daemon restart (a new context on the same state directory)
    restarted = await Bmc(ipmi_sim, tmp_path).run()
    assert restarted.ok and restarted.values["sel_new"] == 0


@integration
async def test_drive_fault_is_a_business_hours_hardware_ticket(ipmi_sim: IpmiSim, tmp_path):
    probe = Bmc(ipmi_sim, tmp_path)
    assert (await probe.run()).ok
    ipmi_sim.add_sel(0x0D, 5, 0x01)  # Drive Slot / Bay #0x05 | Drive Fault
    result = await probe.run()
    assert (result.status, result.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert result.summary.startswith("hardware ticket (business hours): 1 new SEL record: ")
    assert "Drive Slot / Bay #0x05: Drive Fault" in result.summary
    assert result.ticket is Ticket.HARDWARE and "hardware_ticket" not in result.values  # never a metric
    assert not bmc.BmcParams().host_critical


@integration
async def test_wrong_password_is_auth(ipmi_sim: IpmiSim, tmp_path):
    result = await Bmc(ipmi_sim, tmp_path, password="wrong").run()
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.AUTH), result.summary
