"""Threshold results and hardware faults become customer notices and tickets, never a ladder."""

from __future__ import annotations

import asyncio
import json

import pytest

from monitord.checkstate import Event
from monitord.config import parse_config
from monitord.engine import Engine
from monitord.metrics import Metrics
from monitord.notify import Notifier
from monitord.outbox import Outbox
from monitord.results import Reason, Result, Status
from monitord.state import SQLiteStore
from probes.base import ProbeContext
from tests.fakeclock import FakeClock

CONFIG = """
paging:
  integrations:
    mail: {type: email, host: 127.0.0.1, port: 2525, tls: none, from: noc@example.jp}
  policies: {ops: {tiers: [{targets: [mail]}]}}
  routes: [{policy: ops}]
customers:
  acme: {notify: [mail], emails: [it@acme.example]}
hosts:
  db1:
    address: 127.0.0.1
    customer: acme
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    checks:
      disk: {transport: local}
      bmc: {}
"""


class IdleScheduler:
    """The engine asks the scheduler only for states and re-probes; nothing runs here."""

    def state_of(self, check_id):
        raise KeyError(check_id)

    def run_soon(self, check_id):
        pass


def make_engine(tmp_path, text: str):
    """An engine on a fake clock with a real store and outbox, for the config ``text``."""
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "state.db")
    config = parse_config(text)
    metrics = Metrics()
    notifier = Notifier(config=config, store=store, outbox=Outbox(store, clock), clock=clock, metrics=metrics)
    engine = Engine(config=config, store=store, metrics=metrics, clock=clock, ctx=ProbeContext(),
                    scheduler=IdleScheduler(), notifier=notifier)
    return engine, store, {s.name: s for s in config.checks()}


@pytest.fixture
def engine(tmp_path):
    made = make_engine(tmp_path, CONFIG)
    yield made
    made[1].close()


def subjects(store) -> list[str]:
    return [json.loads(item.message)["summary"] for item in store.outbox()]


async def test_disk_threshold_is_a_customer_notice_not_a_ladder(engine):
    engine, store, specs = engine
    result = Result(Status.CRITICAL, Reason.THRESHOLD, "/var disk 93% (>= 90%)", 0.1, 1000.0)
    engine.notify(specs["disk"], Event.CONFIRMED, result, incident_id=5)
    await asyncio.sleep(0)
    await engine.idle()
    assert subjects(store) == ["【容量警告】db1: disk: /var disk 93% (>= 90%)"]
    assert not [e for e in store.journal() if e.event == "decided"]


async def test_failed_drive_is_a_business_hours_ticket_announced_to_the_customer(engine):
    engine, store, specs = engine
    result = Result(Status.WARNING, Reason.THRESHOLD, "hardware ticket (business hours): Drive Slot 3 fault", 0.1,
                    1000.0, {"hardware_ticket": 1.0})
    engine.notify(specs["bmc"], Event.CONFIRMED, result, incident_id=6)
    await asyncio.sleep(0)
    await engine.idle()
    assert subjects(store) == ["db1: hardware ticket (business hours): Drive Slot 3 fault",
                               "【作業予定】db1: hardware ticket (business hours): Drive Slot 3 fault"]
    scheduled = [e for e in store.journal() if e.event == "page_sent"]
    assert scheduled and not [e for e in store.journal() if e.event == "decided"]


PING_CONFIG = """
paging:
  integrations: {slack: {type: slack, webhook_url: {env: NOPE}}}
  policies: {ops: {tiers: [{targets: [slack]}]}}
  routes: [{policy: ops}]
hosts:
  web1:
    address: 127.0.0.1
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    checks:
      ping: {}
      https: {restart: {unit: nginx}}
"""


@pytest.fixture
def ping_engine(tmp_path):
    made = make_engine(tmp_path, PING_CONFIG)
    yield made
    made[1].close()


@pytest.mark.parametrize("check,result", [
    ("ping", Result(Status.WARNING, Reason.THRESHOLD, "33% loss (1 of 3 lost)", 0.1, 1000.0)),
    ("ping", Result(Status.UNKNOWN, Reason.ERROR, "Temporary failure in name resolution", 0.1, 1000.0)),
    ("https", Result(Status.CRITICAL, Reason.THRESHOLD, "certificate expires in 3 days", 0.1, 1000.0)),
])
async def test_warnings_and_threshold_verdicts_never_start_a_ladder(ping_engine, check, result):
    engine, store, specs = ping_engine
    engine.notify(specs[check], Event.CONFIRMED, result, incident_id=1)
    await asyncio.sleep(0)
    await engine.idle()
    assert not [e for e in store.journal() if e.event in ("decided", "blocked")]  # no reset, no restart
    assert [e.decision for e in store.journal() if e.event == "page_sent"] == ["check_warning"]


async def test_a_host_that_degrades_from_loss_to_down_starts_the_ladder(ping_engine):
    engine, store, specs = ping_engine
    down = Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply from 127.0.0.1 (3 sent)", 0.1, 1000.0)
    engine.notify(specs["ping"], Event.CHANGED, down, incident_id=1)
    await asyncio.sleep(0)
    await engine.idle()
    assert [e.decision for e in store.journal() if e.event == "decided"][:1] == ["bmc_read"]
