"""The ``snmp`` host-resources probe: grading offline, then against a real snmpd on this machine."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from pysnmp.proto.rfc1902 import Integer32, OctetString
from pyasn1.type.univ import ObjectIdentifier

from monitord.config import SnmpConfig, parse_config
from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from monitord.shared import kept
from probes import snmphost
from monitord.shared.probe import ProbeCall, ProbeContext
from tests.snmp_peer import SnmpAgent
from tests.support import need_binary, need_root

integration = pytest.mark.integration


def test_reboot_detection():
    day = 86400.0
    before = {"uptime": 10 * day, "at": 1000.0}
    assert not snmphost.rebooted({}, 5.0, 2000.0)  # nothing to compare with
    assert not snmphost.rebooted(before, 10 * day + 600, 1600.0)  # ten minutes on
    assert not snmphost.rebooted(before, 10 * day + 500, 1600.0)  # within the slack
    assert snmphost.rebooted(before, 300.0, 1600.0)  # back to five minutes: rebooted
    # down for two hours, booted 1.5 h ago: the uptime did not go back, but fell short
    assert snmphost.rebooted(before, 5400.0, 1000.0 + 7200)
    # the 32-bit TimeTicks wrap after 497 days is not a reboot
    near_wrap = {"uptime": snmphost.TIMETICKS_WRAP - 100, "at": 1000.0}
    assert not snmphost.rebooted(near_wrap, 500.0, 1600.0)
    assert snmphost.rebooted(near_wrap, 5000.0, 1600.0)


def _storage(rows: dict[int, tuple[str, str, int, int, int]]) -> dict:
    """An hrStorageTable as {column: {index: value}} from {index: (type, descr, units, size, used)}."""
    types = {"ram": "1.3.6.1.2.1.25.2.1.2", "other": "1.3.6.1.2.1.25.2.1.1", "disk": "1.3.6.1.2.1.25.2.1.4"}
    table: dict[int, dict] = {c: {} for c in range(2, 7)}
    for index, (kind, descr, units, size, used) in rows.items():
        table[2][(index,)] = ObjectIdentifier(types[kind])
        table[3][(index,)] = OctetString(descr)
        table[4][(index,)] = Integer32(units)
        table[5][(index,)] = Integer32(size)
        table[6][(index,)] = Integer32(used)
    return table


def test_memory_without_buffers_and_cache():
    net_snmp = {1: ("ram", "Physical memory", 1024, 1000, 900), 6: ("other", "Memory buffers", 1024, 1000, 100),
                7: ("other", "Cached memory", 1024, 400, 400), 11: ("other", "Available memory", 1024, 450, 0)}
    assert snmphost.memory_used_percent(_storage(net_snmp)) == pytest.approx(55.0)  # size - available
    del net_snmp[11]  # an older agent: subtract buffers and cache
    assert snmphost.memory_used_percent(_storage(net_snmp)) == pytest.approx(40.0)
    plain = {5: ("ram", "RAM", 65536, 100, 80), 9: ("disk", "/", 4096, 100, 10)}
    assert snmphost.memory_used_percent(_storage(plain)) == pytest.approx(80.0)
    assert snmphost.memory_used_percent(_storage({9: ("disk", "/", 4096, 100, 10)})) is None


def test_params():
    with pytest.raises(ValidationError, match="cpu_warning_percent must not be more than cpu_critical_percent"):
        snmphost.SnmpHostParams(cpu_warning_percent=99, cpu_critical_percent=90)
    with pytest.raises(Exception) as info:
        parse_config("hosts:\n  fw1:\n    address: 127.0.0.1\n    checks:\n      snmp: {}\n")
    assert "hosts.fw1.checks.snmp.kind: kind snmp needs a snmp: block on the host" in str(info.value)


# -- against snmpd


async def probe(agent: SnmpAgent, state: Path, snmp: SnmpConfig | None = None, **params) -> Result:
    """One run with the daemon's state directory ``state``."""
    ctx = ProbeContext(state_dir=state)
    call = ProbeCall("fw1", "127.0.0.1", 10.0, check="snmp", snmp=snmp or agent.config())
    try:
        return await run_probe(snmphost.KIND, ctx, call, snmphost.SnmpHostParams(**params), now=time.time())
    finally:
        await ctx.aclose()


@integration
async def test_healthy_host(snmp_agent: SnmpAgent, tmp_path):
    result = await probe(snmp_agent, tmp_path, processes=["snmpd"], interfaces=["lo"])
    assert result.status is Status.OK, result.summary
    assert "memory" in result.summary and "1 process running" in result.summary and "1 interface up" in result.summary
    assert result.values["process_count:snmpd"] >= 1 and result.values["interface_up:lo"] == 1
    assert 0 < result.values["memory_used_percent"] < 100 and result.values["uptime_seconds"] > 0
    assert "cpu" in result.summary  # "cpu N%", or "cpu not sampled yet" in the agent's first minute


@integration
async def test_v3(snmp_agent: SnmpAgent, tmp_path):
    result = await probe(snmp_agent, tmp_path, snmp_agent.config(version="3"), memory=False, cpu=False)
    assert result.ok, result.summary


@integration
async def test_memory_threshold(snmp_agent: SnmpAgent, tmp_path):
    result = await probe(snmp_agent, tmp_path, cpu=False, reboot=False, memory_warning_percent=0.0)
    assert (result.status, result.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert result.summary.startswith("memory ") and "(warning at 0%)" in result.summary


@integration
async def test_missing_process(snmp_agent: SnmpAgent, tmp_path):
    result = await probe(snmp_agent, tmp_path, cpu=False, memory=False, processes=["snmpd", "no-such-daemon"])
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert result.summary == "process no-such-daemon not running"
    assert result.values["process_count:no-such-daemon"] == 0


_veths = itertools.count()


class Veth:
    """A veth pair in this namespace (``mdtvethN`` and its peer ``mdtvethNp``), created down.

    (The kernel here has no ``dummy`` link type; a veth end is up only when both ends are.)
    """

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.name = f"mdtveth{os.getpid() % 1000}{next(_veths)}"
        self.peer = self.name + "p"
        subprocess.run([ip, "link", "add", self.name, "type", "veth", "peer", "name", self.peer], check=True)

    def set(self, state: str, end: str | None = None) -> None:
        """``ip link set END up|down`` (default: this end)."""
        subprocess.run([self.ip, "link", "set", end or self.name, state], check=True)

    def delete(self) -> None:
        """Delete the pair (deleting one end deletes both)."""
        subprocess.run([self.ip, "link", "del", self.name], check=False)


@pytest.fixture
def veth():
    """A :class:`Veth` pair, deleted afterwards."""
    need_root()
    pair = Veth(need_binary("ip"))
    try:
        yield pair
    finally:
        pair.delete()


@integration
async def test_interface_by_name_down_and_up(veth, snmp_agent: SnmpAgent, tmp_path):
    name = veth.name
    missing = await probe(snmp_agent, tmp_path, cpu=False, memory=False, reboot=False, interfaces=["mdt-no-such-if"])
    assert (missing.status, missing.summary) == (Status.CRITICAL, "interface mdt-no-such-if not found")

    async def wait_for_summary(done) -> Result:
        """Probe until ``done(result)`` (snmpd caches its interface table for a few seconds)."""
        deadline = time.monotonic() + 20
        while True:
            result = await probe(snmp_agent, tmp_path, cpu=False, memory=False, reboot=False, interfaces=["lo", name])
            if done(result) or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.5)

    async def wait_for(status: Status) -> Result:
        return await wait_for_summary(lambda result: result.status is status)

    down = await wait_for_summary(lambda result: "not found" not in result.summary)  # snmpd sees it soon
    assert (down.status, down.reason) == (Status.CRITICAL, Reason.THRESHOLD), down.summary
    assert down.summary == f"interface {name} is down (administratively down)"
    assert down.values[f"interface_up:{name}"] == 0 and down.values["interface_up:lo"] == 1
    veth.set("up")  # up, but its peer is down: no carrier
    no_carrier = await wait_for_summary(lambda r: "administratively" not in r.summary)
    assert no_carrier.status is Status.CRITICAL
    assert no_carrier.summary in (f"interface {name} is down", f"interface {name} is lowerLayerDown")
    veth.set("up", veth.peer)
    up = await wait_for(Status.OK)
    assert up.status is Status.OK, up.summary
    assert "2 interfaces up" in up.summary and up.values[f"interface_up:{name}"] == 1


@integration
async def test_unexpected_reboot(snmp_agent: SnmpAgent, tmp_path):
    first = await probe(snmp_agent, tmp_path, cpu=False, memory=False)
    assert first.ok, first.summary
    state = tmp_path / "snmp" / "fw1" / "snmp" / "uptime.json"
    seen = kept.read_json(state)
    assert seen["source"] == "hrSystemUptime"
    # pretend the last run saw the host up ten days longer: now its uptime is "back" at today's
    kept.write_json(state, seen | {"uptime": seen["uptime"] + 10 * 86400})
    rebooted = await probe(snmp_agent, tmp_path, cpu=False, memory=False)
    assert (rebooted.status, rebooted.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert rebooted.summary.startswith("unexpected reboot: up ") and "had been up 10d" in rebooted.summary
    again = await probe(snmp_agent, tmp_path, cpu=False, memory=False)  # still reported within reboot_hold
    assert again.status is Status.WARNING and "had been up 10d" in again.summary
    past = await probe(snmp_agent, tmp_path, cpu=False, memory=False, reboot_hold="1ms")
    assert past.ok, past.summary


@integration
async def test_agent_down_or_wrong_community_is_timeout(snmp_agent: SnmpAgent, tmp_path):
    wrong = await probe(snmp_agent, tmp_path, snmp_agent.config(community="wrong"), snmp_timeout=0.3, snmp_retries=0)
    assert (wrong.status, wrong.reason) == (Status.CRITICAL, Reason.TIMEOUT), wrong.summary
