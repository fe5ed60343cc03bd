"""PagerDuty V3 webhooks: signatures as PagerDuty documents them, events against a real store
over the daemon's listener (fake clock), then the daemon as a process: an acknowledgement in
PagerDuty stops monitord's tier escalation, seen at the real page receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import pytest

from monitord.config import parse_config
from monitord.edge.api import Api
from monitord.paging.notify import TICK
from monitord.paging.pdwebhook import ROUTE, parse_event, signed
from monitord.records.state import SQLiteStore
from tests.daemon_proc import wait_for
from tests.fakeclock import FakeClock
from tests.support import Served, free_port
from tests.test_scenarios import Fleet, HttpCapture

SECRET = "pd-webhook-s3cret"
OLD_SECRET = "pd-webhook-old"


def signature(raw: bytes, *secrets: str) -> str:
    """``X-PagerDuty-Signature`` as PagerDuty builds it: one v1=hex HMAC-SHA256 per secret, comma separated."""
    return ",".join("v1=" + hmac.new(s.encode(), raw, hashlib.sha256).hexdigest() for s in secrets)


def event(event_type: str, key: str, event_id: str = "01EVENT", agent: str = "Aoki Taro") -> bytes:
    """A V3 delivery as in PagerDuty's documentation (only the fields monitord reads matter)."""
    return json.dumps({"event": {
        "id": event_id, "event_type": event_type, "resource_type": "incident", "occurred_at": "2026-11-26T04:00:00Z",
        "agent": {"id": "PLH1HKV", "summary": agent, "type": "user_reference"}, "client": {"name": "PagerDuty"},
        "data": {"id": "PGR0VU2", "type": "incident", "number": 2, "status": "acknowledged", "incident_key": key,
                 "title": "web1: service is down", "urgency": "high", "resolve_reason": None}}}).encode()


# ---------------------------------------------------------------------------------------
# Signatures and bodies


def test_a_signature_from_the_secret_verifies_and_any_other_does_not():
    raw = event("incident.acknowledged", "monitord-page-1")
    assert signed(raw, signature(raw, SECRET), [SECRET])
    assert signed(raw, signature(raw, SECRET).upper().replace("V1=", "v1="), [SECRET])  # hex in either case
    assert not signed(raw, signature(raw, "other"), [SECRET])
    assert not signed(raw + b" ", signature(raw, SECRET), [SECRET])  # the raw body, byte for byte
    assert not signed(raw, signature(raw, SECRET).replace("v1=", "v0="), [SECRET])  # only v1 signatures count
    assert not signed(raw, "", [SECRET]) and not signed(raw, signature(raw, SECRET), [])


def test_during_a_secret_rotation_either_secret_verifies():
    raw = event("incident.acknowledged", "monitord-page-1")
    both = signature(raw, "new-secret-not-ours-yet", OLD_SECRET)
    assert signed(raw, both, [OLD_SECRET]) and signed(raw, both.replace(",", " , "), [OLD_SECRET])
    assert signed(raw, signature(raw, SECRET), [OLD_SECRET, SECRET])


@pytest.mark.parametrize("raw,why", [
    (b"{", "body is not JSON"),
    (b"[]", "body must be a PagerDuty V3 webhook"),
    (b'{"messages": []}', "body must be a PagerDuty V3 webhook"),  # a V2 webhook
    (b'{"event": {"event_type": "incident.acknowledged", "data": {}}}', "event.id must be a non-empty string"),
    (b'{"event": {"id": "x", "event_type": 5, "data": {}}}', "event.event_type must be a non-empty string"),
    (b'{"event": {"id": "x", "event_type": "incident.resolved", "data": null}}', "event.data must be an object"),
])
def test_bad_bodies_say_why(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_event(raw)


# ---------------------------------------------------------------------------------------
# Deliveries, over the listener, against a real store

CONFIG = """
paging:
  integrations:
    pd: {type: pagerduty, routing_key: {env: PD_KEY}, webhook_secret: {env: PD_WEBHOOK_SECRET}}
    pd-old: {type: pagerduty, routing_key: {env: PD_KEY}, webhook_secret: {env: PD_WEBHOOK_OLD}}
    hook: {type: webhook, url: "http://127.0.0.1:9/x", secret: {env: PD_KEY}}
  people: {aoki: {notify: [pd]}}
  policies: {ops: {tiers: [{targets: [aoki]}]}}
  routes: [{policy: ops}]
"""


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch):
    monkeypatch.setenv("PD_KEY", "r" * 32)
    monkeypatch.setenv("PD_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PD_WEBHOOK_OLD", OLD_SECRET)


class Paged(Served):
    """The API's routes on the daemon's listener, a store with one incident paged twice (two rounds)."""

    def __init__(self, tmp_path, config_text: str = CONFIG):
        super().__init__()
        self.clock = FakeClock()
        self.store = SQLiteStore(tmp_path / "state.db")
        self.config = parse_config(config_text)
        Api(self.store, self.clock, lambda: self.config).install(self.app)

    async def __aenter__(self) -> "Paged":
        now = self.clock.time()
        self.incident = await self.store.incidents.open("web1", "nginx", "http", now, now, "nginx is down")
        for n, key in enumerate(("monitord-page-1", "monitord-page-2")):
            page = await self.store.outbox.open_page(self.incident, "web1", "service_failed", "error", "ops",
                                                     "nginx is down", now)
            await self.store.outbox.update_page(page, paged=[["pd", key], ["hook", key]], next_at=now + 900)
        return await super().__aenter__()

    async def __aexit__(self, *exc) -> None:
        await super().__aexit__(*exc)
        await self.store.close()

    async def post(self, raw: bytes, sig: str | None = None) -> tuple[int, dict]:
        headers = {"X-PagerDuty-Signature": sig if sig is not None else signature(raw, SECRET),
                   "Content-Type": "application/json"}
        async with self.http.post(self.url(ROUTE), data=raw, headers=headers) as r:
            return r.status, await r.json()

    async def acks(self) -> list[tuple[str, str, dict]]:
        return [(e.reason, e.detail.get("by"), e.detail.get("pagerduty_event"))
                for e in await self.store.incidents.journal(self.incident) if e.event == "ack"]


async def test_an_acknowledgement_in_pagerduty_acknowledges_the_incident_once(tmp_path):
    async with Paged(tmp_path) as served:
        assert await served.post(event("incident.acknowledged", "monitord-page-2")) == (
            200, {"event": "01EVENT", "acknowledged": 2})  # the key names one page; its incident's pages all
        pages = await served.store.outbox.pages(incident_id=served.incident)
        assert [(p.acked_at, p.acked_by) for p in pages] == [(served.clock.time(), "pagerduty: Aoki Taro")] * 2
        assert await served.acks() == [("2 page(s) acknowledged: acknowledged in PagerDuty", "pagerduty: Aoki Taro",
                                        "01EVENT")]
        # PagerDuty retries the delivery, or someone replays it: nothing changes
        await served.clock.advance(60)
        assert await served.post(event("incident.acknowledged", "monitord-page-2")) == (
            200, {"event": "01EVENT", "acknowledged": 0})
        assert len(await served.acks()) == 1 and (await served.store.outbox.pages(incident_id=served.incident))[0].acked_at == pages[0].acked_at


async def test_a_resolve_in_pagerduty_acknowledges_and_never_closes_the_incident(tmp_path):
    async with Paged(tmp_path) as served:
        status, body = await served.post(event("incident.resolved", "monitord-page-1", "01RESOLVE"))
        assert (status, body) == (200, {"event": "01RESOLVE", "acknowledged": 2})
        [incident] = await served.store.incidents.list()
        assert incident.closed_at is None  # closed only when monitord's checks see the recovery
        assert all(p.closed_at is None and p.acked_at is not None for p in await served.store.outbox.pages(incident_id=served.incident))
        [(reason, by, event_id)] = await served.acks()
        assert reason.startswith("2 page(s) acknowledged: resolved in PagerDuty; monitord closes the incident when")
        # after the resolve, a late acknowledgement (another event) is journaled but acknowledges nothing new
        assert (await served.post(event("incident.acknowledged", "monitord-page-1", "01LATE")))[1]["acknowledged"] == 0
        assert [e for _, _, e in await served.acks()] == ["01RESOLVE", "01LATE"]


@pytest.mark.parametrize("raw,why", [
    (event("incident.triggered", "monitord-page-1"), "event type incident.triggered is not acted on"),
    (event("service.updated", "monitord-page-1"), "event type service.updated is not acted on"),
    (event("incident.acknowledged", "d3640fbd41094207a1c11e58e46b1662"), "the incident key names no open page"),
    (event("incident.acknowledged", "monitord-vendor-iaas-incident-1"), "the incident key names no open page"),
])
async def test_other_events_and_keys_are_answered_200_and_ignored(tmp_path, raw, why):
    async with Paged(tmp_path) as served:
        assert await served.post(raw) == (200, {"ignored": why})
        assert await served.acks() == [] and all(p.acked_at is None for p in await served.store.outbox.pages())


async def test_signatures_are_required_and_checked_against_every_configured_secret(tmp_path):
    raw = event("incident.acknowledged", "monitord-page-1")
    async with Paged(tmp_path) as served:
        assert await served.post(raw, "") == (401, {"error": "missing X-PagerDuty-Signature"})
        assert await served.post(raw, signature(raw, "guess")) == (
            401, {"error": "X-PagerDuty-Signature matches no webhook secret"})
        assert await served.post(raw, signature(b"{}", SECRET)) == (
            401, {"error": "X-PagerDuty-Signature matches no webhook secret"})  # signed, but another body
        assert await served.acks() == []
        # the old secret of the other integration, during a rotation
        assert (await served.post(raw, signature(raw, "new-one", OLD_SECRET)))[0] == 200
        assert (await served.store.outbox.pages())[0].acked_by == "pagerduty: Aoki Taro"


async def test_a_bad_body_with_a_good_signature_is_a_400_with_the_reason(tmp_path):
    async with Paged(tmp_path) as served:
        assert await served.post(b'{"messages": []}') == (400, {"error": 'body must be a PagerDuty V3 webhook: {"event": {...}}'})


async def test_without_a_webhook_secret_the_route_is_off(tmp_path):
    config = CONFIG.replace(", webhook_secret: {env: PD_WEBHOOK_SECRET}", "").replace(
        ", webhook_secret: {env: PD_WEBHOOK_OLD}", "")
    async with Paged(tmp_path, config) as served:
        raw = event("incident.acknowledged", "monitord-page-1")
        assert await served.post(raw) == (
            403, {"error": "the PagerDuty webhook is off: set webhook_secret on a pagerduty integration"})


# ---------------------------------------------------------------------------------------
# The daemon as a process: an ack on the phone stops the tier escalation


@pytest.mark.integration
def test_an_ack_in_pagerduty_stops_the_next_tier(tmp_path):
    first, second = HttpCapture(), HttpCapture()  # tier 1's PagerDuty service, tier 2's
    fleet = Fleet(tmp_path)
    try:
        fleet.add("web1", "127.0.0.1", checks={"ping": {"count": 1, "reply_timeout": "1s"},
                                               "nginx": {"kind": "tcp", "port": free_port()}})  # nothing listens
        fleet.top["paging"] = {
            "integrations": {
                "pd": {"type": "pagerduty", "url": first.url, "routing_key": fleet.secret("pd", "r" * 32),
                       "webhook_secret": fleet.secret("pd-webhook", SECRET)},
                "pd-chief": {"type": "pagerduty", "url": second.url, "routing_key": fleet.secret("pd2", "s" * 32)},
            },
            "people": {"aoki": {"notify": ["pd"]}, "chief": {"notify": ["pd-chief"]}},
            "policies": {"ops": {"tiers": [{"targets": ["aoki"], "ack_timeout": "4s"},
                                           {"targets": ["chief"], "ack_timeout": "4s"}]}},
            "routes": [{"policy": "ops"}],
        }
        daemon = fleet.start()
        wait_for(lambda: first.actions() == ["trigger"], 30, "the tier 1 page")
        paged_at = time.monotonic()
        key = first.bodies[0]["dedup_key"]
        raw = event("incident.acknowledged", key, "01PHONE")
        request = urllib.request.Request(f"http://127.0.0.1:{fleet.port}{ROUTE}", data=raw, method="POST",
                                         headers={"X-PagerDuty-Signature": signature(raw, SECRET)})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read()) == {"event": "01PHONE", "acknowledged": 1}
        wait_for(lambda: first.actions() == ["trigger", "acknowledge"], 20, "the acknowledgement sent back")
        # unacknowledged, tier 2 is paged at the first paging tick (every 5 s) after tier 1's 4 s
        time.sleep(max(0.0, paged_at + 4 + TICK + 2 - time.monotonic()))
        assert second.bodies == []  # the chief is not woken
        assert [reason for what, _, _, reason in daemon.journal() if what == "ack"] == [
            "1 page(s) acknowledged: acknowledged in PagerDuty"]
        # a forged acknowledgement is refused
        forged = urllib.request.Request(f"http://127.0.0.1:{fleet.port}{ROUTE}", data=raw, method="POST",
                                        headers={"X-PagerDuty-Signature": signature(raw, "forged")})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=5)
        assert refused.value.code == 401
    finally:
        fleet.stop()
        first.close()
        second.close()
