"""The blast-radius guard's logic on a fake clock: what counts as down now, what gets probed,
and the episode as an incident of its own (opened and paged once, resolved when it clears)."""

from __future__ import annotations

import asyncio

import pytest

from monitord.escalation.blastradius import MONITOR, BlastGuard, Episode, assess, down_now, to_probe
from monitord.config import BlastRadius, parse_config
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.paging.outbox import Outbox
from monitord.records.state import SQLiteStore
from tests.fakeclock import FakeClock

BR = BlastRadius(max_down_hosts=10, max_down_percent=20, window=300)


@pytest.mark.parametrize("down,total,canary,blocked", [
    (set(), 3, None, False),
    ({"a"}, 3, None, False),  # one host down is a host problem, whatever the percentage
    ({"a", "b"}, 3, None, True),
    ({"a", "b"}, 10, None, False),  # 20 % is not more than 20 %
    ({"a", "b", "c"}, 10, None, True),
    ({f"h{i}" for i in range(11)}, 10_000, None, True),  # more than max_down_hosts
    (set(), 3, "gateway", True),
])
def test_assess(down, total, canary, blocked):
    assert (assess(down, total, BR, canary) is not None) is blocked


def test_down_now_trusts_a_fresh_probe_over_the_check_state():
    failing = {"old": 0.0, "recent": 900.0, "back": 950.0}
    assert down_now(failing, {"recent": False, "back": True}) == {"old", "recent"}
    assert to_probe(failing, 1000.0, 300) == {"recent", "back"}  # an old failure is taken from its state


def test_episode_starts_and_clears_once():
    episode = Episode()
    assert [episode.update(w, t) for w, t in [(None, 0), ("x", 1), ("y", 2), ("y", 3), (None, 4), (None, 5)]] == [
        None, "started", None, None, "cleared", None]


CONFIG = """
paging:
  integrations: {pd: {type: pagerduty, routing_key: {env: PD_KEY}}}
  policies: {ops: {repeat: 2, tiers: [{targets: [pd], ack_timeout: 15m}]}}
  routes: [{policy: ops}]
hosts:
  a: {address: 127.0.0.1}
  b: {address: 127.0.0.1}
  c: {address: 127.0.0.1}
"""


class World:
    """Check states and probe answers the guard reads; every probe is counted."""

    def __init__(self):
        self.failing: dict[str, float] = {}
        self.answers: dict[str, bool] = {}
        self.probed: list[str] = []

    async def probe(self, host: str) -> bool:
        self.probed.append(host)
        await asyncio.sleep(0)
        return self.answers.get(host, True)


@pytest.fixture
async def guard(tmp_path):
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "state.db")
    config = parse_config(CONFIG)
    notifier = Notifier(config=config, store=store, outbox=Outbox(store, clock), clock=clock, metrics=Metrics())
    world = World()
    made = BlastGuard(config=lambda: (config.escalation.blast_radius.model_copy(update={"window": 300}), 3),
                      store=store, notifier=notifier, metrics=Metrics(), clock=clock,
                      failing=lambda: world.failing, probe=world.probe)
    yield made, world, store, clock, notifier
    await store.close()


async def outbox(store) -> list[tuple[str, str]]:
    return [(i.action, i.dedup_key) for i in await store.outbox.items()]


async def test_a_host_that_recovered_no_longer_counts(guard):
    made, world, store, clock, _ = guard
    # a crashed 30 s ago and was reset; its check state still says failing, a fresh probe says it answers
    world.failing = {"a": clock.time() - 30, "b": clock.time()}
    world.answers = {"a": True, "b": False}
    assert await made.evaluate() is None
    assert sorted(world.probed) == ["a", "b"] and await store.incidents.list() == []


async def test_an_episode_is_one_incident_paged_once_and_resolved_when_it_clears(guard):
    made, world, store, clock, notifier = guard
    world.failing = {"a": clock.time(), "b": clock.time(), "c": clock.time()}
    world.answers = {"a": False, "b": False, "c": False}
    why = await made.evaluate()
    assert why == "3 of 3 hosts down now"
    assert await made.evaluate() == why  # quiet: no second incident, no second page
    [incident] = await store.incidents.list()
    assert (incident.host, incident.check, incident.closed_at) == (MONITOR, "blast_radius", None)
    assert await outbox(store) == [("trigger", "monitord-page-1")]
    assert await made.hold("a", "failure", "ping: no reply")  # per-host notices are held, journaled to the episode
    assert [e.incident_id for e in await store.incidents.journal() if e.event == "held"] == [incident.id]
    clock._now += 15 * 60
    await notifier.tick()  # unacknowledged: the page repeats per its policy
    assert (await outbox(store))[-1] == ("trigger", "monitord-page-1-r1")
    world.answers = {}
    world.failing = {}
    assert await made.evaluate() is None
    assert (await store.incidents.list())[0].closed_at == clock.time()
    assert [a for a, _ in await outbox(store)].count("resolve") == 2  # every key that was paged
    assert not await made.hold("a", "failure", "x")
    # the next outage is a new episode, paged again
    world.failing = {"a": clock.time(), "b": clock.time()}
    world.answers = {"a": False, "b": False}
    assert await made.evaluate() is not None
    assert len(await store.incidents.list()) == 2 and (await outbox(store))[-1] == ("trigger", "monitord-page-2")


async def test_concurrent_evaluations_share_one_round_of_probes(guard):
    made, world, *_ = guard
    world.failing = {"a": 0.0 + 1_800_000_000}
    await asyncio.gather(*(made.evaluate() for _ in range(5)))
    assert world.probed == ["a"]


async def test_a_failed_canary_blocks_without_probing_the_fleet(tmp_path):
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "state.db")
    config = parse_config(CONFIG + "escalation: {blast_radius: {canaries: [c]}}\n")
    notifier = Notifier(config=config, store=store, outbox=Outbox(store, clock), clock=clock, metrics=Metrics())
    world = World()
    world.answers = {"c": False}
    world.failing = {"a": clock.time()}
    made = BlastGuard(config=lambda: (config.escalation.blast_radius, 3), store=store, notifier=notifier,
                      metrics=Metrics(), clock=clock, failing=lambda: world.failing, probe=world.probe)
    assert await made.evaluate() == "reference target c is not answering"
    assert world.probed == ["c"]
    await store.close()


async def test_an_episode_open_at_a_restart_is_resumed_not_forgotten(guard, tmp_path):
    made, world, store, clock, notifier = guard
    world.failing = {"a": clock.time(), "b": clock.time()}
    world.answers = {"a": False, "b": False}
    await made.evaluate()
    again = BlastGuard(config=lambda: (BR, 3), store=store, notifier=notifier, metrics=Metrics(), clock=clock,
                       failing=lambda: {}, probe=world.probe)
    await again.restore()
    assert again.active and again.episode.incident_id == (await store.incidents.list())[0].id
    assert await again.evaluate() is None and (await store.incidents.list())[0].closed_at is not None
