"""config/appliance.example.yaml, contract 004's appliance customer, validated through check-config,
and what it promises: 9:00-17:30 support hours on business days, the VM's power through libvirt,
the Windows profile, process checks with restarts, vendor escalation on level 3."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from monitord.edge import cli

from monitord.escalation import ladder as escalation
from monitord.paging.business_calendar import Calendars
from monitord.config import load_config
from monitord.paging.oncall import matching_route

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "appliance.example.yaml"
JST = dt.timezone(dt.timedelta(hours=9))


def at(*args: int) -> float:
    return dt.datetime(*args, tzinfo=JST).timestamp()


def test_check_config_accepts_it(capsys):
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "process 2" in out


def test_support_hours_are_nine_to_half_past_five_on_business_days():
    config = load_config(EXAMPLE)
    calendar = Calendars(config).for_host("vvault1")
    assert calendar.is_business_time(at(2026, 11, 26, 9, 0))  # Thursday
    assert calendar.is_business_time(at(2026, 11, 26, 17, 29))
    assert not calendar.is_business_time(at(2026, 11, 26, 17, 30))
    assert not calendar.is_business_time(at(2026, 11, 26, 8, 59))
    assert not calendar.is_business_time(at(2026, 11, 28, 10, 0))  # Saturday
    assert not calendar.is_business_time(at(2026, 11, 23, 10, 0))  # 勤労感謝の日 (a Monday in 2026)
    assert not calendar.is_business_time(at(2026, 12, 30, 10, 0))  # year-end break
    assert Calendars(config).for_host("hv1").is_business_time(at(2026, 11, 26, 17, 45))  # default hours elsewhere


def test_the_appliance_host():
    config = load_config(EXAMPLE)
    host = config.hosts["vvault1"]
    assert host.os == "windows" and host.ssh.os == "windows"
    assert host.power_drivers() == ("vm",) and host.vm.shutdown_timeout == 180
    remediation = config.remediation("vvault1")
    assert set(remediation.contact_first) == {"service_restart", "power_reset", "power_cycle"}
    assert {name for name, check in host.checks.items() if check.restart} == {"console", "vvault-service",
                                                                                 "vvault-agent"}
    assert escalation.Step.SERVICE_RESTART.value in remediation.contact_first


def test_level_3_on_the_appliance_escalates_to_both_vendors():
    config = load_config(EXAMPLE)
    host = config.hosts["vvault1"]
    chosen = matching_route(config.paging.routes, host.groups, host.tags, "dispatch", "critical")
    assert chosen.vendors == ["carrier", "iaas"]
    assert {config.paging.vendors[v].role for v in chosen.vendors} == {"network", "iaas"}
    assert matching_route(config.paging.routes, host.groups, host.tags, "service_failed", "error").vendors == []
