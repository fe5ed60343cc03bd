"""Threshold results and hardware faults become customer notices and tickets, never a ladder."""

from __future__ import annotations

import asyncio
import json

import pytest

from monitord.run.checkstate import Event
from monitord.config import parse_config
from monitord.escalation.engine import Engine
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.paging.outbox import Outbox
from monitord.shared.results import Reason, Result, Status, Ticket
from monitord.records.state import SQLiteStore
from monitord.shared.probe import ProbeContext
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


def make_engine(tmp_path, text: str, scheduler=None):
    """An engine on a fake clock with a real store and outbox, for the config ``text``."""
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "state.db")
    config = parse_config(text)
    metrics = Metrics()
    notifier = Notifier(config=config, store=store, outbox=Outbox(store, clock), clock=clock, metrics=metrics)
    engine = Engine(config=config, store=store, metrics=metrics, clock=clock, ctx=ProbeContext(),
                    scheduler=scheduler or IdleScheduler(), notifier=notifier)
    return engine, store, {s.name: s for s in config.checks()}


@pytest.fixture
async def engine(tmp_path):
    made = make_engine(tmp_path, CONFIG)
    yield made
    await made[1].close()


async def subjects(store) -> list[str]:
    return [json.loads(item.message)["summary"] for item in await store.outbox.items()]


async def test_disk_threshold_is_a_customer_notice_and_an_operator_warning_not_a_ladder(engine):
    engine, store, specs = engine
    result = Result(Status.CRITICAL, Reason.THRESHOLD, "/var disk 93% (>= 90%)", 0.1, 1000.0)
    await engine.notify(specs["disk"], Event.CONFIRMED, result, incident_id=5)
    await asyncio.sleep(0)
    await engine.idle()
    assert await subjects(store) == ["【容量警告】db1: disk: /var disk 93% (>= 90%)", "db1/disk: /var disk 93% (>= 90%)"]
    assert [(p.kind, p.severity) for p in await store.outbox.pages(incident_id=5)] == [("threshold", "warning")]
    assert not [e for e in await store.incidents.journal() if e.event == "decided"]
    await engine.notify(specs["disk"], Event.RECOVERED, Result(Status.OK, Reason.NONE, "/var disk 70%", 0.1, 2000.0), 5)
    await asyncio.sleep(0)
    await engine.idle()
    actions = [json.loads(item.message)["action"] for item in await store.outbox.items()]
    assert actions == ["trigger", "trigger", "resolve"]  # the operator's warning resolved, no customer mail


async def test_failed_drive_is_a_business_hours_ticket_announced_to_the_customer(engine):
    engine, store, specs = engine
    result = Result(Status.WARNING, Reason.THRESHOLD, "hardware ticket (business hours): Drive Slot 3 fault", 0.1,
                    1000.0, ticket=Ticket.HARDWARE)
    await engine.notify(specs["bmc"], Event.CONFIRMED, result, incident_id=6)
    await asyncio.sleep(0)
    await engine.idle()
    assert await subjects(store) == ["db1: hardware ticket (business hours): Drive Slot 3 fault",
                                     "【作業予定】db1: hardware ticket (business hours): Drive Slot 3 fault"]
    scheduled = [e for e in await store.incidents.journal() if e.event == "page_sent"]
    assert scheduled and not [e for e in await store.incidents.journal() if e.event == "decided"]


PING_CONFIG = """
paging:
  integrations: {slack: {type: slack, webhook_url: {env: NOPE}}}
  policies: {ops: {tiers: [{targets: [slack]}]}}
  routes: [{policy: ops}]
hosts:
  web1:
    address: 127.0.0.1
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    ssh: {key: {env: NOPE}}
    checks:
      ping: {}
      https: {restart: {unit: nginx}}
"""


@pytest.fixture
async def ping_engine(tmp_path):
    made = make_engine(tmp_path, PING_CONFIG)
    yield made
    await made[1].close()


@pytest.mark.parametrize("check,result", [
    ("ping", Result(Status.WARNING, Reason.THRESHOLD, "33% loss (1 of 3 lost)", 0.1, 1000.0)),
    ("ping", Result(Status.UNKNOWN, Reason.ERROR, "Temporary failure in name resolution", 0.1, 1000.0)),
    ("https", Result(Status.CRITICAL, Reason.THRESHOLD, "certificate expires in 3 days", 0.1, 1000.0)),
    # the service answered and refused our credentials: a config mistake, never a restart
    ("https", Result(Status.CRITICAL, Reason.AUTH, "login refused: password authentication failed", 0.1, 1000.0)),
])
async def test_warnings_and_threshold_verdicts_never_start_a_ladder(ping_engine, check, result):
    engine, store, specs = ping_engine
    await engine.notify(specs[check], Event.CONFIRMED, result, incident_id=1)
    await asyncio.sleep(0)
    await engine.idle()
    assert not [e for e in await store.incidents.journal() if e.event in ("decided", "blocked")]  # no reset, no restart
    assert [e.decision for e in await store.incidents.journal() if e.event == "page_sent"] == ["check_warning"]


async def test_a_host_that_degrades_from_loss_to_down_starts_the_ladder(ping_engine):
    engine, store, specs = ping_engine
    down = Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply from 127.0.0.1 (3 sent)", 0.1, 1000.0)
    await engine.notify(specs["ping"], Event.CHANGED, down, incident_id=1)
    await asyncio.sleep(0)
    await engine.idle()
    assert [e.decision for e in await store.incidents.journal() if e.event == "decided"][:1] == ["bmc_read"]


# -- the lifecycle of an episode, on the fake clock ------------------------------------------------

from monitord.escalation import ladder as esc  # noqa: E402
from monitord.run.checkstate import CheckState  # noqa: E402



class StateScheduler(IdleScheduler):
    """Check states a test sets."""

    def __init__(self):
        self.states: dict[str, CheckState] = {}

    def state_of(self, check_id):
        return self.states[check_id]

    def incident_of(self, check_id):
        return None


def hard(result: Result) -> CheckState:
    return CheckState(status=result.status, hard=True, attempt=2, last_result=result, problem_since=result.started_at)


@pytest.fixture
async def lifecycle(tmp_path):
    engine, store, specs = make_engine(tmp_path, PING_CONFIG, StateScheduler())
    yield engine, store, specs
    await store.close()


async def test_a_deferred_restart_is_cancelled_when_the_check_recovered_meanwhile(lifecycle):
    engine, store, specs = lifecycle
    https = specs["https"]
    clock = engine.clock
    engine._states["web1"] = esc.HostState(grace_until=clock.time() + 60)  # a reset just happened
    down = Result(Status.CRITICAL, Reason.REFUSED, "connection refused", 0.1, clock.time())
    engine.scheduler.states[https.id] = hard(down)
    incident = await store.incidents.open("web1", "https", "https", clock.time(), clock.time(), "refused")
    engine.submit("web1", esc.Confirmed("https", False, incident, "connection refused"))
    await clock.advance(1)
    assert [e.event for e in await store.incidents.journal() if e.host == "web1"] == ["deferred"]
    engine.scheduler.states[https.id] = CheckState()  # https answers again before the grace period ends
    await clock.advance(60)
    await engine.idle()
    events = [(e.event, e.reason) for e in await store.incidents.journal() if e.host == "web1"]
    assert events[-1][0] == "cancelled" and "no longer confirmed down" in events[-1][1]
    assert not [e for e in await store.incidents.journal() if e.event == "decided"]


async def test_warnings_fold_into_the_ladder_in_progress(lifecycle):
    engine, store, specs = lifecycle
    engine._states["web1"] = esc.HostState(phase=esc.Phase.ACTING, ladder=esc.Ladder.HOST, level=1,
                                           step=esc.Step.WAIT_BOOT, check="ping", incident_id=9)
    loss = Result(Status.WARNING, Reason.THRESHOLD, "33% loss (1 of 3 lost)", 0.1, 1000.0)
    for _ in range(3):
        await engine.notify(specs["ping"], Event.CHANGED, loss, incident_id=9)
    assert not [e for e in await store.incidents.journal() if e.event == "page_sent"]
    assert [e.incident_id for e in await store.incidents.journal() if e.event == "note"] == [9, 9, 9]


async def test_a_check_recovering_during_a_ladder_leaves_the_incident_to_the_ladder(lifecycle):
    engine, store, specs = lifecycle
    clock = engine.clock
    incident = await store.incidents.open("web1", "ping", "ping", clock.time(), clock.time(), "down")
    engine._states["web1"] = esc.HostState(phase=esc.Phase.DISPATCHED, ladder=esc.Ladder.HOST, level=3,
                                           check="ping", incident_id=incident)
    assert engine.episode("web1") == incident
    await engine.notifier.page("web1", "dispatch", "web1: level 3", incident)
    await engine.notify(specs["ping"], Event.RECOVERED, Result(Status.OK, Reason.NONE, "ok", 0.1, clock.time()),
                        incident_id=incident)
    assert (await store.incidents.list())[0].closed_at is None and len(await store.outbox.pages()) == 1  # not resolved by the check


async def test_a_recovery_without_a_ladder_resolves_pages_and_tells_the_customer_once(tmp_path):
    engine, store, specs = make_engine(tmp_path, CONFIG.replace("      bmc: {}\n", "      bmc: {}\n      ping: {}\n"))
    clock = engine.clock
    incident = await store.incidents.open("db1", "ping", "ping", clock.time(), clock.time(), "down")
    await engine.notifier.notice("db1", "failure", "ping: no reply", incident)
    await engine.notifier.page("db1", "check_warning", "db1/ping: 33% loss", incident)
    await store.incidents.close(incident, clock.time())  # what the scheduler does before telling the engine
    ok = Result(Status.OK, Reason.NONE, "ok", 0.1, clock.time())
    for _ in range(2):
        await engine.notify(specs["ping"], Event.RECOVERED, ok, incident_id=incident)
    await asyncio.sleep(0)
    await engine.idle()
    assert [(i.action, i.dedup_key) for i in await store.outbox.items()] == [
        ("trigger", f"monitord-notice-db1-failure-{incident}"), ("trigger", "monitord-page-1"),
        ("resolve", "monitord-page-1"), ("resolve", f"monitord-notice-db1-failure-{incident}")]
    assert await store.outbox.pages() == []


async def test_a_confirmation_of_an_incident_that_is_over_is_not_acted_on(lifecycle):
    # e.g. queued twice; the first ladder reset the host and closed the incident before the
    # check's own state caught up
    engine, store, specs = lifecycle
    clock = engine.clock
    ping = specs["ping"]
    engine.scheduler.states[ping.id] = hard(Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply", 0.1, clock.time()))
    incident = await store.incidents.open("web1", "ping", "ping", clock.time(), clock.time(), "no reply")
    await store.incidents.close(incident, clock.time())
    engine.submit("web1", esc.Confirmed("ping", True, incident, "no reply"))
    await asyncio.sleep(0)
    await engine.idle()
    [entry] = [e for e in await store.incidents.journal() if e.host == "web1"]
    assert (entry.event, entry.reason) == ("cancelled", f"incident {incident} of ping is over already")


async def test_hosts_blocked_by_the_blast_radius_guard_wait_quietly_until_it_clears(lifecycle, caplog):
    engine, store, specs = lifecycle
    clock = engine.clock
    ping = specs["ping"]
    engine.scheduler.states[ping.id] = hard(Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply", 0.1, clock.time()))
    engine._states["web1"] = esc.HostState(blocked="blast_radius")
    engine.blast.episode.update("3 of 3 hosts down now", clock.time())
    for _ in range(3):  # what the daemon does every 30 s
        engine._reevaluate()
        await clock.advance(30)
    assert not engine._tasks and await store.incidents.journal() == []  # no BMC read, no journal row
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # no log line
    engine.blast.episode.update(None, clock.time())
    engine._reevaluate()
    assert [t.get_name() for t in engine._tasks] == ["escalation web1"]  # the guard cleared: its ladder runs
    for task in engine._tasks:
        task.cancel()


# -- a service confirmed while its host's host-down check settles ---------------------------------

def soft(result: Result) -> CheckState:
    return CheckState(status=result.status, hard=False, attempt=1, last_result=result, problem_since=result.started_at)


class IncidentScheduler(StateScheduler):
    """Check states and open incidents a test sets."""

    def __init__(self):
        super().__init__()
        self.incidents: dict[str, int] = {}

    def incident_of(self, check_id):
        return self.incidents.get(check_id)

    async def run_now(self, check_id):
        return self.states[check_id].last_result  # a fresh probe finds what the state says

    def due_times(self):
        return {}


@pytest.fixture
async def settling(tmp_path):
    engine, store, specs = make_engine(tmp_path, PING_CONFIG, IncidentScheduler())
    clock = engine.clock
    lost = Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply", 0.1, clock.time())
    engine.scheduler.states[specs["ping"].id] = soft(lost)  # ping fails, not confirmed yet
    refused = Result(Status.CRITICAL, Reason.REFUSED, "connection refused", 0.1, clock.time())
    engine.scheduler.states[specs["https"].id] = hard(refused)
    incident = await store.incidents.open("web1", "https", "https", clock.time(), clock.time(), "refused")
    engine.scheduler.incidents[specs["https"].id] = incident
    await engine.notify(specs["https"], Event.CONFIRMED, refused, incident)
    await asyncio.sleep(0)
    await engine.idle()
    yield engine, store, specs, incident
    await store.close()


async def test_a_service_confirmed_while_ping_is_soft_waits_for_ping(settling):
    engine, store, specs, incident = settling
    [entry] = [e for e in await store.incidents.journal() if e.host == "web1"]
    assert (entry.event, entry.decision, entry.check, entry.incident_id) == ("deferred", "host_down_settling", "https", incident)
    assert "waits for ping to settle" in entry.reason
    for _ in range(3):  # the periodic re-evaluation leaves it waiting, quietly
        engine._reevaluate()
        await engine.idle()
    assert len(await store.incidents.journal()) == 1 and engine.state("web1").ladder is None
    assert engine.episode("web1") == incident  # ping confirming now joins the service's incident
    explained = await engine.explain("web1")
    assert explained["next"]["what"] == ("https is confirmed down and waits for ping to settle "
                                         "(the host may be going down)") and explained["next"]["decisions"] == []


async def test_a_host_down_confirmation_takes_the_waiting_service_into_its_ladder(settling):
    engine, store, specs, incident = settling
    ping = specs["ping"]
    down = Result(Status.CRITICAL, Reason.UNREACHABLE, "no reply", 0.1, engine.clock.time())
    engine.scheduler.states[ping.id] = hard(down)
    engine.actions.execute = hang  # the host's ladder stays at its first step
    await engine.notify(ping, Event.CONFIRMED, down, incident)
    for _ in range(20):
        await asyncio.sleep(0)
    journal = await store.incidents.journal()
    assert [(e.event, e.decision) for e in journal if e.event == "decided"] == [("decided", "bmc_read")]
    assert engine.state("web1").ladder is esc.Ladder.HOST and engine.state("web1").incident_id == incident
    assert not [e for e in journal if e.decision == "service_restart"]
    for task in engine._tasks:
        task.cancel()


async def test_a_ping_blip_lets_the_waiting_service_ladder_run(settling):
    engine, store, specs, incident = settling
    engine.scheduler.states[specs["ping"].id] = CheckState()  # soft recovery: the host is up
    assert engine.episode("web1") is None
    engine.actions.execute = hang
    engine._reevaluate()
    for _ in range(20):
        await asyncio.sleep(0)
    assert engine.state("web1").ladder is esc.Ladder.SERVICE and engine.state("web1").check == "https"
    for task in engine._tasks:
        task.cancel()


async def hang(*args):
    await asyncio.Event().wait()


# -- maintenance silences people too ----------------------------------------------------------------

async def test_maintenance_holds_notices_and_pages_once_per_kind_and_sends_them_after(tmp_path):
    engine, store, specs = make_engine(tmp_path, CONFIG, IncidentScheduler())
    clock = engine.clock
    window = await store.control.add_maintenance("host:db1", clock.time(), clock.time() + 3600, "disk swap", "alice")
    full = Result(Status.CRITICAL, Reason.THRESHOLD, "/var disk 93% (>= 90%)", 0.1, clock.time())
    engine.scheduler.states[specs["disk"].id] = hard(full)
    incident = await store.incidents.open("db1", "disk", "disk", clock.time(), clock.time(), "93%")
    engine.scheduler.incidents[specs["disk"].id] = incident
    for _ in range(3):  # confirmed, then changed twice: one held entry per kind
        await engine.notify(specs["disk"], Event.CONFIRMED, full, incident)
    drive = Result(Status.WARNING, Reason.THRESHOLD, "hardware ticket (business hours): Drive Slot 3 fault", 0.1,
                   clock.time(), ticket=Ticket.HARDWARE)
    await engine.notify(specs["bmc"], Event.CONFIRMED, drive, incident_id=None)
    assert await store.outbox.items() == []  # nobody hears of it during the window
    held = [(e.decision, e.incident_id) for e in await store.incidents.journal() if e.event == "held"]
    assert held == [("threshold notice", incident), ("threshold", incident), ("hardware_ticket", None),
                    ("work notice", None)]
    assert all("held for maintenance window #" in e.reason for e in await store.incidents.journal() if e.event == "held")
    await engine.intake.after_maintenance()
    assert await store.outbox.items() == []  # the window still covers the host
    await store.control.remove_maintenance(window)
    await engine.intake.after_maintenance()  # the window ended; disk is still full
    sent = ["【容量警告】db1: disk: /var disk 93% (>= 90%)", "db1/disk: /var disk 93% (>= 90%)"]
    assert await subjects(store) == sent
    await engine.intake.after_maintenance()  # another window ends: sent once, not again
    assert await subjects(store) == sent
    await store.close()
