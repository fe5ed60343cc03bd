"""Vendor escalation (contract 004: the network carrier, the IaaS provider): a route pages its
vendors once per incident with the findings and what was tried, journaled for the report.
Fake clock, real store and outbox; delivery to real receivers is in test_appliance_scenarios.py."""

from __future__ import annotations

import datetime as dt

import pytest

from monitord.paging.business_calendar import Calendars
from monitord.config import ConfigError, parse_config
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.paging.outbox import Outbox
from monitord.records.report import load_report, render
from monitord.records.state import SQLiteStore
from remediation.pagers import Message
from tests.fakeclock import FakeClock

JST = dt.timezone(dt.timedelta(hours=9))
CONFIG = """
paging:
  integrations:
    pd-ops: {type: pagerduty, routing_key: {env: PD_KEY}}
    mail: {type: email, host: 127.0.0.1, from: noc@example.jp}
    iaas-hook: {type: webhook, url: "https://support.iaas.example/hook", secret: {env: HOOK}}
  people:
    aoki: {notify: [pd-ops]}
  policies:
    ops: {tiers: [{targets: [aoki]}]}
  vendors:
    iaas: {name: Example Cloud, role: iaas, notify: [iaas-hook, mail], emails: [support@iaas.example],
           reference: C-1234}
    carrier: {role: network, notify: [mail], emails: [noc@carrier.example], language: en}
  routes:
    - {policy: ops, kinds: [dispatch], vendors: [iaas, carrier]}
    - {policy: ops}
hosts:
  nas1: {address: 127.0.0.2}
"""


@pytest.fixture
async def env(tmp_path):
    clock = FakeClock(start=dt.datetime(2026, 11, 20, 21, 0, tzinfo=JST).timestamp())
    store = SQLiteStore(tmp_path / "state.db")
    notifier = Notifier(config=parse_config(CONFIG), store=store, outbox=Outbox(store, clock), clock=clock,
                        metrics=Metrics())
    yield clock, store, notifier
    await store.close()


async def vendor_items(store) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.integration, i.dedup_key, Message.from_json(i.message).to) for i in await store.outbox.items()
            if "vendor" in i.dedup_key]


async def test_a_level_3_page_escalates_to_the_routes_vendors_once(env):
    clock, store, notifier = env
    details = {"level": 3, "tried": ["power_reset: failed (error)"], "bmc": None}
    await notifier.page("nas1", "dispatch", "nas1: not back after a VM power cycle", 7, details)
    await notifier.page("nas1", "dispatch", "nas1: repeated", 7, details)  # same incident: no second escalation
    assert await vendor_items(store) == [
        ("iaas-hook", "monitord-vendor-iaas-incident-7", ("support@iaas.example",)),  # HTTP ignores to
        ("mail", "monitord-vendor-iaas-incident-7", ("support@iaas.example",)),
        ("mail", "monitord-vendor-carrier-incident-7", ("noc@carrier.example",)),
    ]
    journaled = [e for e in await store.incidents.journal(limit=100) if e.event == "vendor_escalated"]
    assert [(e.decision, e.incident_id, e.detail["integrations"]) for e in journaled] == [
        ("iaas", 7, ["iaas-hook", "mail"]), ("carrier", 7, ["mail"])]
    assert journaled[0].reason == "Example Cloud (iaas): nas1: not back after a VM power cycle"


async def test_what_the_vendor_receives(env):
    clock, store, notifier = env
    await notifier.page("nas1", "dispatch", "nas1: down", 7, {"tried": ["power_reset: ok", "wait_boot: failed (timeout)"]})
    message = Message.from_json(next(i for i in await store.outbox.items() if i.integration == "iaas-hook").message)
    assert message.details["tried"] == ["power_reset: ok", "wait_boot: failed (timeout)"]
    assert (message.details["reference"], message.details["address"], message.details["role"]) == (
        "C-1234", "127.0.0.2", "iaas")
    assert message.summary == "【エスカレーション】nas1: nas1: down"
    assert "契約番号 C-1234" in message.body and "- wait_boot: failed (timeout)" in message.body
    english = Message.from_json(next(i for i in await store.outbox.items() if "carrier" in i.dedup_key).message)
    assert english.summary.startswith("[Escalation] nas1") and "What we tried:" in english.body


async def test_other_routes_page_no_vendor(env):
    clock, store, notifier = env
    await notifier.page("nas1", "service_failed", "nas1: vvault still failing after a restart", 8, {"tried": []})
    assert await vendor_items(store) == []


async def test_the_incident_report_shows_the_escalation(env):
    clock, store, notifier = env
    incident = await store.incidents.open("nas1", "ping", "ping", clock.time(), clock.time(), "down")
    await notifier.page("nas1", "dispatch", "nas1: down", incident, {"tried": ["power_reset: failed (error)"]})
    await store.incidents.close(incident, clock.time() + 600)
    text = render(await load_report(store, incident, Calendars(parse_config(CONFIG))), "md", "ja")
    assert "関連ベンダーへエスカレーション" in text and "Example Cloud (iaas)" in text


@pytest.mark.parametrize("change,problem", [
    ("vendors: [iaas, carrier]}", None),
    ("vendors: [iaaas]}", "paging.routes[0].vendors[0]: unknown vendor 'iaaas' (line 16)"),
])
def test_unknown_vendor_in_a_route(change, problem):
    text = CONFIG.replace("vendors: [iaas, carrier]}", change)
    if problem is None:
        assert parse_config(text).paging.routes[0].vendors == ["iaas", "carrier"]
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.problems == [problem]


def test_vendor_needs_known_integrations():
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("notify: [mail], emails: [noc", "notify: [mial], emails: [noc"))
    assert caught.value.problems == ["paging.vendors.carrier.notify[0]: unknown integration 'mial' (line 14)"]
