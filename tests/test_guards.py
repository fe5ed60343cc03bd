"""Each guard on its own, on the fake clock (no root, no peers): maintenance, parent down (with a
real scheduler: a guard's fresh probe is recorded like a scheduled run), quarantine, business
hours, dry-run, the blast radius, the store's health, and the ladder's pure limit, grace and
off-hours approval verdicts; then all of them together, as ``explain`` reports them."""

from __future__ import annotations

import pytest

from monitord.config import parse_config
from monitord.edge.metrics import Metrics
from monitord.escalation import ladder as esc
from monitord.escalation.fleet import Fleet
from monitord.escalation.guards import GuardSet, ParentDown, StoreHealth, active_windows, maintenance, off_hours, quarantined
from monitord.paging.business_calendar import Calendars
from monitord.records.state import SQLiteStore
from monitord.shared.results import Status
from tests.fakeclock import FakeClock
from tests.support import Scripted, unit_engine

NOW = 1_800_000_000.0  # Friday 2027-01-15 17:00 in Tokyo: business hours by default
CONFIG = """
hosts:
  sw1:
    address: 127.0.0.1
    parents: [core]
    checks: {ping: {}}
  core:
    address: 127.0.0.1
    checks: {ping: {}}
  web1:
    address: 127.0.0.1
    parents: [sw1]
    groups: [web]
    bmc: {address: 127.0.0.1, username: admin, password: {env: NOPE}}
    checks: {ping: {}}
groups:
  web: {}
"""
WINDOW = """
maintenance:
  firmware:
    groups: [web]
    start: 2027-01-15T16:00:00+09:00
    end: 2027-01-15T18:00:00+09:00
"""


@pytest.fixture
async def store(tmp_path):
    made = SQLiteStore(tmp_path / "state.db")
    yield made
    await made.close()


@pytest.fixture
async def world(store):
    """A real scheduler with the config's checks on a fake clock, answering from a script."""
    clock, metrics, config = FakeClock(NOW), Metrics(), parse_config(CONFIG)
    script = Scripted(clock)
    scheduler = await script.scheduler(config, store, metrics)
    return config, scheduler, script, clock, metrics


async def test_maintenance_covers_its_targets_during_its_window_only(store):
    config = parse_config(CONFIG + WINDOW)
    assert await maintenance(config, store, "web1", NOW) == "firmware"  # through its group
    assert await maintenance(config, store, "sw1", NOW) is None  # not a target
    assert await maintenance(config, store, "web1", NOW + 3600) is None  # the window ended at 18:00
    window = await store.control.add_maintenance("host:sw1", NOW - 60, NOW + 60, "cable swap", "op")
    assert await maintenance(config, store, "sw1", NOW) == f"#{window} cable swap"
    assert await maintenance(config, store, "sw1", NOW + 60) is None  # the end is exclusive
    assert await active_windows(config, store, NOW) == {"config:firmware", f"cli:{window}"}


async def test_quarantine_holds_until_release(store):
    assert not await quarantined(store, "web1")
    await store.control.quarantine("web1", NOW, "intrusion", "op")
    assert await quarantined(store, "web1") and not await quarantined(store, "sw1")
    await store.control.release("web1")
    assert not await quarantined(store, "web1")


def test_off_hours_follows_the_hosts_calendar():
    calendars = Calendars(parse_config(CONFIG))
    assert not off_hours(calendars, "web1", NOW)  # Friday 17:00 in Tokyo
    assert off_hours(calendars, "web1", NOW + 3600)  # 18:00: closed
    assert off_hours(calendars, "web1", NOW + 2 * 86400 - 7 * 3600)  # Sunday 10:00


async def test_parent_down_reads_check_states_and_probes_through_the_scheduler(world):
    config, scheduler, script, clock, metrics = world
    parents = ParentDown(Fleet(config, scheduler))
    assert parents.seen("web1") is None and await parents.probed("web1") is None
    assert sorted(script.calls) == ["core/ping", "sw1/ping"]  # every ancestor, grandparents too
    script.down = {"core"}
    assert parents.seen("web1") is None  # its check state still says OK
    assert await parents.probed("web1") == "core"
    # the fresh probe was a run of core's check: its state and metrics moved (soft, retried)
    state = scheduler.state_of("core/ping")
    assert (state.status, state.level, state.attempt) == (Status.CRITICAL, 1, 1)
    assert 'monitord_probe_success{check="ping",host="core",kind="ping"} 0.0' in metrics.exposition().decode()
    assert parents.seen("web1") == "core" and parents.seen("core") is None


async def test_store_health_blocks_while_the_store_cannot_be_written(store):
    health = StoreHealth(store)
    assert health.verdict() is None
    store._db.execute("PRAGMA query_only=1")  # every write fails, as on a full disk
    with pytest.raises(Exception):
        async with store.transaction():
            await store.control.quarantine("web1", NOW, "x", None)
    assert health.verdict().startswith("the state store cannot be written: ")
    health.hold("web2")
    health.hold("web1")
    assert health.release() == ["web1", "web2"] and health.release() == []


@pytest.mark.parametrize("what, used, blocked", [
    (esc.Step.POWER_RESET, 2, None), (esc.Step.POWER_RESET, 3, "reset limit reached (3/3)"),
    (esc.Step.POWER_CYCLE, 3, "reset limit reached (3/3)"),
    (esc.Step.SERVICE_RESTART, 2, None), (esc.Step.SERVICE_RESTART, 3, "restart limit reached (3/3)"),
])
def test_the_limit_counts_actions_within_its_window_only(what, used, blocked):
    policy = esc.Policy(max_resets=3, reset_window=3600, max_restarts=3, restart_window=600)
    times = tuple(NOW - 10 * i for i in range(used))
    state = esc.HostState(power_actions=times, restarts=times)
    assert esc.limit_verdict(what, state, policy, NOW) == blocked
    old = esc.HostState(power_actions=times + (NOW - 3600,), restarts=times + (NOW - 600,))  # one just expired
    assert esc.limit_verdict(what, old, policy, NOW) == blocked


def test_grace_holds_until_its_end():
    state = esc.HostState(grace_until=NOW + 300)
    assert esc.grace_verdict(state, NOW) == "grace period after the last action until 2027-01-15T08:05:00+00:00"
    assert esc.grace_verdict(state, NOW + 300) is None


@pytest.mark.parametrize("what, off, first, asked", [
    (esc.Step.POWER_RESET, True, {esc.Step.POWER_RESET}, True),
    (esc.Step.POWER_RESET, False, {esc.Step.POWER_RESET}, False),  # business hours: act
    (esc.Step.POWER_CYCLE, True, {esc.Step.POWER_RESET}, False),  # not a contact-first action
    (esc.Step.VERIFY, True, {esc.Step.VERIFY}, False),  # not destructive: never asked
])
def test_off_hours_approval_asks_before_contact_first_actions_outside_business_hours(what, off, first, asked):
    verdict = esc.approval_verdict(what, esc.Policy(contact_first=frozenset(first)), esc.Guards(off_hours=off))
    assert verdict == (f"outside business hours: the emergency contact is asked before {what}" if asked else None)


@pytest.mark.parametrize("what, blocked", [(esc.Step.POWER_RESET, True), (esc.Step.BMC_READ, False)])
def test_dry_run_blocks_destructive_steps_only(what, blocked):
    for policy, guards in ((esc.Policy(), esc.Guards(dry_run=True)), (esc.Policy(dry_run=True), esc.Guards())):
        verdicts = dict(esc.guard_verdicts(what, policy, guards))
        assert (verdicts["dry_run"] is not None) == blocked


async def test_the_blast_radius_probes_recent_failures_through_the_scheduler(store, world):
    config, scheduler, script, clock, metrics = world
    engine = await unit_engine(store, config, scheduler, None, clock, metrics)
    script.down = {"sw1", "web1", "core"}
    for host in ("sw1", "web1", "core"):
        await scheduler.run_now(f"{host}/ping")  # each fails once: soft, recent
    assert await engine.blast.evaluate() == "3 of 3 hosts down now"
    assert script.calls.count("web1/ping") == 2  # looked at again, fresh
    assert scheduler.state_of("web1/ping").attempt == 2  # and recorded as a run of the check
    script.down = set()
    assert await engine.blast.evaluate() is None
    assert scheduler.state_of("web1/ping").status is Status.OK  # the fresh probe recovered it


async def test_all_guards_together_as_explain_reports_them(store, world):
    """Several guards at once, each with its own reason; ``explain`` lists exactly what the
    guard set says (one source for "why not")."""
    config, scheduler, script, clock, metrics = world
    config = parse_config(CONFIG + WINDOW + "business_hours: {days: [sun]}\n"
                          "defaults: {remediation: {contact_first: [power_reset]}}\n")
    engine = await unit_engine(store, config, await Scripted(clock).scheduler(config, store, metrics), None, clock,
                               metrics)
    await store.control.quarantine("web1", NOW, "intrusion", "op")
    engine._states["web1"] = state = esc.HostState(power_actions=(NOW - 60,) * 3, grace_until=NOW + 60)
    policy = engine.policy("web1")
    guards = GuardSet(config=config, store=store, fleet=engine.fleet, calendars=Calendars(config), blast=engine.blast,
                      health=StoreHealth(store), dry_run=True)
    verdicts = dict(await guards.verdicts("web1", esc.Step.POWER_RESET, state, policy, NOW))
    assert {name for name, why in verdicts.items() if why} == {
        "quarantined", "maintenance", "dry_run", "limit", "grace", "off_hours_approval"}
    assert {name for name, why in verdicts.items() if not why} == {"parent_down", "blast_radius", "store_health"}
    explained = {g["guard"]: g["reason"] for g in (await engine.explain("web1"))["guards"]}
    same = dict(await engine.guards.verdicts("web1", esc.Step.POWER_RESET, state, policy, NOW))
    assert explained == {name: why or "passes" for name, why in same.items()}
    assert same == {**verdicts, "dry_run": None}  # the engine itself is not in dry-run
    cheap = await guards.cheap("web1", NOW)
    assert (cheap.quarantined, cheap.maintenance, cheap.off_hours, cheap.dry_run) == (True, "firmware", True, True)
