"""Paging policies, on-call rotations, ack timeouts, SLA timers and customer notices, on a fake
clock, through the real store and outbox (delivery itself is tested in test_pagers.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from monitord.config import parse_config
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.paging.oncall import Schedule, route
from monitord.paging.outbox import Outbox
from monitord.records.state import SQLiteStore
from tests.fakeclock import FakeClock

JST = dt.timezone(dt.timedelta(hours=9))
CONFIG = """
paging:
  integrations:
    pd-ops: {type: pagerduty, routing_key: {env: PD_KEY}}
    slack-noc: {type: slack, webhook_url: {env: SLACK_URL}}
    mail: {type: email, host: 127.0.0.1, from: noc@example.jp, to: [ops@example.jp]}
  people:
    aoki: {notify: [pd-ops]}
    baba: {notify: [pd-ops, mail]}
    chief: {notify: [mail]}
  schedules:
    primary: {members: [aoki, baba], start: 2026-11-16, handoff: "10:00"}
  policies:
    servers:
      repeat: 2
      tiers:
        - {targets: [primary, slack-noc], ack_timeout: 15m}
        - {targets: [chief], ack_timeout: 10m}
    notices:
      tiers: [{targets: [slack-noc]}]
  routes:
    - {policy: notices, max_severity_note: ignored} 
customers:
  acme: {notify: [mail], emails: [it@acme.example], language: ja}
  globex: {notify: [mail], emails: [ops@globex.example], language: en}
hosts:
  web1: {address: 127.0.0.1, customer: acme, groups: [web]}
  web2: {address: 127.0.0.1, customer: globex, tags: [gold]}
groups: {web: {}}
"""


def config(routes: str = "    - {policy: servers, kinds: [dispatch, service_failed]}\n    - {policy: notices}\n"):
    text = CONFIG.replace("    - {policy: notices, max_severity_note: ignored} \n", routes)
    return parse_config(text)


@pytest.fixture
async def env(tmp_path):
    clock = FakeClock(start=dt.datetime(2026, 11, 20, 21, 0, tzinfo=JST).timestamp())  # Friday night
    store = SQLiteStore(tmp_path / "state.db")
    metrics = Metrics()
    notifier = Notifier(config=config(), store=store, outbox=Outbox(store, clock), clock=clock, metrics=metrics)
    yield clock, store, notifier, metrics
    await store.close()


async def queued(store) -> list[tuple[str, str, str]]:
    """(integration, action, dedup_key) of every outbox item, in order."""
    return [(i.integration, i.action, i.dedup_key) for i in await store.outbox.items()]


def test_weekly_rotation_and_overrides():
    s = Schedule(members=["aoki", "baba", "chiba"], start=dt.date(2026, 11, 16), handoff=dt.time(10, 0),
                 overrides=[{"person": "chiba", "start": "2026-11-20T18:00:00+09:00",
                             "end": "2026-11-21T10:00:00+09:00"}])
    at = lambda *a: dt.datetime(*a, tzinfo=JST).timestamp()  # noqa: E731
    assert s.on_call(at(2026, 11, 16, 10, 0)) == "aoki"
    assert s.on_call(at(2026, 11, 23, 9, 59)) == "aoki"
    assert s.on_call(at(2026, 11, 23, 10, 0)) == "baba"
    assert s.on_call(at(2026, 11, 30, 10, 0)) == "chiba"
    assert s.on_call(at(2026, 12, 7, 10, 0)) == "aoki"
    assert s.on_call(at(2026, 11, 20, 19, 0)) == "chiba"  # override
    assert s.on_call(at(2026, 11, 21, 10, 0)) == "aoki"  # override over


def test_routing_by_group_tag_kind_and_severity():
    routes = config("    - {policy: servers, groups: [web], min_severity: error}\n"
                    "    - {policy: notices, tags: [gold]}\n").paging.routes
    assert route(routes, ["web"], [], "dispatch", "critical") == "servers"
    assert route(routes, ["web"], [], "action_held", "warning") is None
    assert route(routes, [], ["gold"], "action_held", "warning") == "notices"
    assert route(routes, [], [], "dispatch", "critical") is None


def test_unknown_references_are_config_errors():
    from monitord.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.replace("[primary, slack-noc]", "[primray, slack-noc]").replace(
            "    - {policy: notices, max_severity_note: ignored} \n", "    - {policy: server}\n"))
    assert info.value.problems == [
        "paging.policies.servers.tiers[0].targets[0]: unknown target 'primray': not a person, schedule or "
        "integration (line 17)",
        "paging.routes[0].policy: unknown policy 'server' (line 22)",
    ]


async def test_unacknowledged_page_climbs_the_tiers_then_repeats(env):
    clock, store, notifier, _ = env
    await notifier.page("web1", "dispatch", "web1: level 3", incident_id=7)
    # tier 1: the schedule (aoki on call this week) and the NOC channel
    assert await queued(store) == [("pd-ops", "trigger", "monitord-page-1"), ("slack-noc", "trigger", "monitord-page-1")]
    clock._now += 15 * 60 - 1
    await notifier.tick()
    assert len(await queued(store)) == 2  # not yet
    clock._now += 1
    await notifier.tick()
    assert (await queued(store))[2:] == [("mail", "trigger", "monitord-page-1")]  # tier 2: chief
    clock._now += 10 * 60
    await notifier.tick()  # the ladder repeats with a new key, so receivers page again
    assert (await queued(store))[3:] == [("pd-ops", "trigger", "monitord-page-1-r1"), ("slack-noc", "trigger", "monitord-page-1-r1")]
    clock._now += 15 * 60
    await notifier.tick()
    clock._now += 10 * 60
    await notifier.tick()  # exhausted: nothing more
    assert len(await queued(store)) == 6
    assert [e.event for e in await store.incidents.journal()].count("page_exhausted") == 1


async def test_ack_stops_escalation_and_acknowledges_every_receiver(env):
    clock, store, notifier, metrics = env
    await notifier.page("web1", "dispatch", "web1: level 3", incident_id=7)
    clock._now += 16 * 60
    await notifier.tick()  # tier 2 paged
    [page] = await store.outbox.pages()
    await store.outbox.update_page(page.id, acked_at=clock.time(), acked_by="chief")  # what `monitord ack 7` does
    await notifier.tick()
    clock._now += 3600
    await notifier.tick()
    actions = await queued(store)
    assert [a for a in actions if a[1] == "acknowledge"] == [
        ("pd-ops", "acknowledge", "monitord-page-1"), ("slack-noc", "acknowledge", "monitord-page-1"),
        ("mail", "acknowledge", "monitord-page-1")]
    assert len([a for a in actions if a[1] == "trigger"]) == 3  # no further tiers after the ack
    assert metrics.ack_latency._sum.get() == 16 * 60


async def test_recovery_resolves_pages(env):
    clock, store, notifier, _ = env
    await notifier.page("web1", "dispatch", "web1: level 3", incident_id=7)
    await notifier.resolve(7)
    assert [a for a in await queued(store) if a[1] == "resolve"] == [
        ("pd-ops", "resolve", "monitord-page-1"), ("slack-noc", "resolve", "monitord-page-1")]
    assert await store.outbox.pages() == []


async def test_sla_breach_pages_the_next_tier_and_counts(env):
    clock, store, notifier, metrics = env
    await notifier.page("web1", "dispatch", "web1: level 3", incident_id=7)
    await store.outbox.update_page(1, acked_at=clock.time(), acked_by="aoki")
    await notifier.tick()
    await notifier.start_sla(7, "web1", "engineer_on_site")
    clock._now += 119 * 60
    await notifier.tick()
    assert metrics.sla_breached._value.get() == 0 and metrics.sla_running._value.get() == 1
    clock._now += 60
    await notifier.tick()
    assert metrics.sla_breached._value.get() == 1
    assert ("mail", "trigger", "monitord-page-1") in await queued(store)  # the next tier hears of the breach
    assert [e.decision for e in await store.incidents.journal() if e.event == "sla_breach"] == ["engineer_on_site"]


@pytest.mark.parametrize("host,subject", [
    ("web1", "【障害発生】web1: ping: no reply"),
    ("web2", "[Failure] web2: ping: no reply"),
])
async def test_customer_failure_notice_in_the_customers_language(env, host, subject):
    clock, store, notifier, _ = env
    await notifier.notice(host, "failure", "ping: no reply", incident_id=3)
    [item] = await store.outbox.items()
    message = json.loads(item.message)
    assert item.integration == "mail" and message["summary"] == subject
    assert message["to"] == (["it@acme.example"] if host == "web1" else ["ops@globex.example"])
    assert "2026-11-20 21:00 JST" in message["body"]


async def test_no_route_is_journaled_not_lost(tmp_path):
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "s.db")
    notifier = Notifier(config=config(routes="    - {policy: servers, kinds: [dispatch]}\n"), store=store,
                        outbox=Outbox(store, clock), clock=clock, metrics=Metrics())
    assert await notifier.page("web1", "action_held", "held", incident_id=1) is None
    assert [e.event for e in await store.incidents.journal()] == ["page_unrouted"]
    await store.close()


async def test_http_api_acknowledges_with_a_token(env, tmp_path):
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from monitord.edge.api import Api

    clock, store, notifier, _ = env
    (tmp_path / "token").write_text("s3cret-token\n")
    cfg = parse_config(CONFIG.replace("    - {policy: notices, max_severity_note: ignored} \n", "    - {policy: servers}\n")
                       + f"daemon: {{api_token: {{file: {tmp_path / 'token'}}}}}\n")
    incident = await store.incidents.open("web1", "ping", "ping", clock.time(), clock.time(), "down")
    notifier.config = cfg
    await notifier.page("web1", "dispatch", "web1: level 3", incident_id=incident)
    app = web.Application()
    Api(store, clock, lambda: cfg).install(app)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        url = server.make_url(f"/api/v1/incidents/{incident}/ack")

        async def post(url, token="s3cret-token", data=b'{"by": "aoki"}'):
            async with http.post(url, data=data, headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status, await resp.json()

        assert (await post(url, token="wrong"))[0] == 401
        assert await post(url, data=b"{not json") == (400, {"error": "the body must be JSON"})
        assert (await post(url, data=b'{"who": 1}'))[0] == 400
        assert (await post(server.make_url("/api/v1/incidents/999/ack")))[0] == 404
        assert (await store.outbox.pages())[0].acked_at is None  # nothing happened so far
        assert await post(url) == (200, {"incident": incident, "acknowledged": 1})
    assert (await store.outbox.pages())[0].acked_by == "aoki"


async def test_a_recovery_notice_resolves_the_failure_notice_key(env):
    clock, store, notifier, _ = env
    await notifier.notice("web2", "failure", "ping: no reply", incident_id=3)
    await notifier.notice("web2", "recovery", "web2", incident_id=3)
    failure, recovery = await store.outbox.items()
    assert (failure.action, recovery.action) == ("trigger", "resolve")
    assert failure.dedup_key == recovery.dedup_key == "monitord-notice-web2-failure-3"
    assert json.loads(recovery.message)["summary"] == "[Recovered] web2"  # e-mail sends the recovery mail


async def test_an_information_is_sent_once_and_resolved_never_escalated(env):
    clock, store, notifier, _ = env
    await notifier.inform("web1", "auto_fixed", "web1: reset automatically at level 1 and verified", incident_id=7)
    assert await queued(store) == [("slack-noc", "trigger", "monitord-page-1"), ("slack-noc", "resolve", "monitord-page-1")]
    assert json.loads((await store.outbox.items())[0].message)["severity"] == "info"
    clock._now += 86400
    await notifier.tick()
    assert len(await queued(store)) == 2 and await store.outbox.pages() == []


@pytest.mark.parametrize("everywhere,per_host", [(True, ""), (False, "    defaults: {remediation: {dry_run: true}}\n")])
async def test_a_dry_run_holds_customer_notices_and_marks_pages(tmp_path, everywhere, per_host):
    # the daemon's --dry-run, or remediation.dry_run for web1 only (web2 is live then)
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "state.db")
    text = CONFIG.replace("    - {policy: notices, max_severity_note: ignored} \n", "    - {policy: notices}\n").replace(
        "  web1: {address: 127.0.0.1, customer: acme, groups: [web]}\n",
                          "  web1:\n    address: 127.0.0.1\n    customer: acme\n    groups: [web]\n" + per_host)
    notifier = Notifier(config=parse_config(text), store=store, outbox=Outbox(store, clock), clock=clock,
                        metrics=Metrics(), dry_run=everywhere)
    await notifier.notice("web1", "failure", "ping: no reply", 7)
    await notifier.page("web1", "dispatch", "web1: level 3", 7, {"tried": ["power_reset"]})
    [held] = [e for e in await store.incidents.journal() if e.event == "held"]
    assert (held.decision, held.incident_id) == ("failure notice", 7)
    assert held.reason.startswith("dry run: would notify the customer: 【障害発生】web1")
    assert not [i for i in await store.outbox.items() if "notice" in i.dedup_key]  # the customer hears nothing
    [page] = await store.outbox.pages()
    assert page.summary == "[dry run] web1: level 3"
    details = [json.loads(i.message).get("details", {}) for i in await store.outbox.items()]
    assert details and all(d.get("dry_run") is True for d in details)
    await notifier.notice("web2", "failure", "ping: no reply", 8)
    assert bool([i for i in await store.outbox.items() if "notice-web2" in i.dedup_key]) is not everywhere
    await store.close()
