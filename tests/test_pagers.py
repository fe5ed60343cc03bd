"""Pagers and the durable page outbox.

Unit tests drive the outbox with a fake clock and scripted pagers; integration tests send
to real HTTP receivers (aiohttp servers on 127.0.0.1) and a real SMTP server (aiosmtpd),
and kill -9 a process holding a queued page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import ssl
import sys
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from monitord.edge.metrics import Metrics
from monitord.paging.outbox import Dispatcher, Outbox
from monitord.shared.results import Reason
from monitord.records.state import SQLiteStore
from remediation.pagers import REGISTRY, DeliveryError, Message, PagingConfig, RetryPolicy
from remediation.pagers import webhook as webhook_mod
from tests.daemon_proc import REPO, wait_for
from tests.fakeclock import FakeClock
from tests.support import Proc, free_port

MSG = Message(dedup_key="incident-42", summary="web1: ping failed (100% loss)", source="web1",
              severity="critical", details={"check": "ping", "level": 1}, at=1_800_000_000.0, incident_id=42)


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    await s.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class ScriptedPager:
    """A pager that fails as told (DeliveryError instances, or "hang"), then succeeds."""

    def __init__(self, *script, timeout: float = 1.0):
        self.script = list(script)
        self.timeout = timeout
        self.sent: list[Message] = []
        self.calls = 0

    async def send(self, message: Message) -> str:
        self.calls += 1
        if self.script:
            step = self.script.pop(0)
            if step == "hang":
                await asyncio.Event().wait()
            raise step
        self.sent.append(message)
        return "ok"


def retryable(summary: str = "HTTP 500", retry_after: float | None = None) -> DeliveryError:
    return DeliveryError(Reason.ERROR, summary, retryable=True, retry_after=retry_after)


def make(store, clock, pagers, **retry) -> tuple[Outbox, Dispatcher, Metrics]:
    outbox, metrics = Outbox(store, clock), Metrics()
    paging = PagingConfig(retry=RetryPolicy(**retry))
    return outbox, Dispatcher(outbox, paging, metrics, pagers=pagers, random=lambda: 0.0), metrics


def paging(integrations: dict, **retry) -> PagingConfig:
    return PagingConfig.model_validate({"integrations": integrations, "retry": retry})


def secret_file(tmp_path: Path, name: str, value: str) -> dict:
    path = tmp_path / name
    path.write_text(value + "\n")
    return {"file": str(path)}


@dataclass
class Captured:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each request and answers as scripted.

    ``answers`` are consumed one per request: a status code, a (status, headers) pair, or
    ``"hang"`` (answer nothing until the server stops); then ``default`` for every further
    request.
    """

    default: int = 202
    answers: list = field(default_factory=list)
    port: int = 0
    requests: list[Captured] = field(default_factory=list)

    async def start(self) -> "Receiver":
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Captured(request.method, request.path, dict(request.query), dict(request.headers),
                                      await request.read()))
        answer = self.answers.pop(0) if self.answers else self.default
        if answer == "hang":
            await self._release.wait()
            answer = 503
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.json_response({"status": "success" if status < 300 else "error"}, status=status, headers=headers)

    async def stop(self) -> None:
        self._release.set()
        await self._runner.cleanup()


@pytest.fixture
async def receiver():
    started: list[Receiver] = []

    async def start(**kwargs) -> Receiver:
        r = await Receiver(**kwargs).start()
        started.append(r)
        return r

    yield start
    for r in started:
        await r.stop()


async def deliver_all(dispatcher: Dispatcher, clock: FakeClock, rounds: int = 10) -> None:
    """Run passes, jumping the fake clock to each next due time, until nothing is pending."""
    for _ in range(rounds):
        await dispatcher.deliver_due()
        due = await dispatcher.store.outbox.next_due()
        if due is None:
            return
        await clock.advance(max(due - clock.time(), 0))
    raise AssertionError("pages still pending")


# --- the message and the config -------------------------------------------------------------


def test_message_round_trip_and_validation():
    assert Message.from_json(MSG.to_json()) == MSG
    japanese = Message(dedup_key="k", summary="障害のお知らせ", source="web1", to=["a@example.jp"])
    assert Message.from_json(japanese.to_json()).to == ("a@example.jp",)
    with pytest.raises(ValueError, match="action"):
        Message(dedup_key="k", summary="s", source="h", action="close")
    with pytest.raises(ValueError, match="severity"):
        Message(dedup_key="k", summary="s", source="h", severity="fatal")
    with pytest.raises(ValueError, match="dedup_key"):
        Message(dedup_key="has space", summary="s", source="h")
    with pytest.raises(TypeError):
        Message(dedup_key="k", summary="s", source="h", details={"x": object()})


def test_registry_and_config_union(tmp_path):
    assert list(REGISTRY) == ["pagerduty", "opsgenie", "slack", "webhook", "email"]
    config = paging({
        "pd": {"type": "pagerduty", "routing_key": {"file": "pd.key"}},
        "og": {"type": "opsgenie", "api_key": {"env": "OG_KEY"}, "responders": [{"type": "team", "name": "ops"}]},
        "chat": {"type": "slack", "webhook_url": {"credential": "slack-url"}},
        "hook": {"type": "webhook", "url": "https://example.invalid/hook", "secret": {"env": "HOOK"}, "timeout": "3s"},
        "mail": {"type": "email", "host": "smtp.example.jp", "from": "監視センター <noc@example.jp>",
                 "to": ["oncall@example.jp"], "username": "noc", "password": {"env": "SMTP_PW"}},
    }, initial="1s", max_delay="1m")
    assert {name: type(c).__name__ for name, c in config.integrations.items()} == {
        "pd": "PagerDutyConfig", "og": "OpsgenieConfig", "chat": "SlackConfig", "hook": "WebhookConfig",
        "mail": "EmailConfig"}
    assert config.integrations["pd"].url == "https://events.pagerduty.com/v2/enqueue"
    assert config.integrations["hook"].timeout == 3.0 and config.retry.max_delay == 60.0

    def error(item: dict) -> str:
        with pytest.raises(ValidationError) as info:
            paging({"x": item})
        return str(info.value)

    assert "never written inline" in error({"type": "pagerduty", "routing_key": "R0UT1NGKEY"})
    assert "does not match any of the expected tags" in error({"type": "pagerdooty", "routing_key": {"env": "K"}})
    assert "Extra inputs are not permitted" in error({"type": "slack", "webhook_url": {"env": "U"}, "channel": "#x"})
    assert "needs tls" in error({"type": "email", "host": "h", "from": "a@b.jp", "tls": "none", "username": "u",
                                 "password": {"env": "P"}})
    assert "both username and password" in error({"type": "email", "host": "h", "from": "a@b.jp", "username": "u"})
    assert "not an e-mail address" in error({"type": "email", "host": "h", "from": "a@b.jp", "to": ["nobody"]})
    assert "should match pattern '^https?://" in error({"type": "webhook", "url": "ftp://x/y", "secret": {"env": "S"}})
    with pytest.raises(ValidationError, match="max_delay"):
        RetryPolicy(initial=60, max_delay=5)


def test_backoff_doubles_up_to_the_cap_with_jitter():
    policy = RetryPolicy()  # 5s, doubling, at most 5m, jitter 20%
    assert [policy.delay(n, 0.0) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert policy.delay(1, 0.5) == pytest.approx(4.5)
    assert policy.delay(7, 0.999) == pytest.approx(300 * 0.8, rel=1e-3)


# --- the outbox, with a fake clock ------------------------------------------------------------


async def test_enqueue_is_durable_and_once_per_dedup_key_and_action(store, tmp_path):
    outbox = Outbox(store, FakeClock())
    assert await outbox.enqueue("pd", MSG) is True
    assert await outbox.enqueue("pd", MSG) is False  # the engine re-deciding after a restart
    assert await outbox.enqueue("pd", dataclasses.replace(MSG, summary="other text")) is False
    assert await outbox.enqueue("mail", MSG) is True  # another integration
    assert await outbox.enqueue("mail", dataclasses.replace(MSG, to=("sato@example.jp",))) is True  # another person
    assert await outbox.enqueue("mail", dataclasses.replace(MSG, to=("sato@example.jp",))) is False
    assert await outbox.enqueue("pd", Message(dedup_key="incident-42", summary="recovered", source="web1",
                                              action="resolve")) is True
    reopened = SQLiteStore(tmp_path / "state.db")
    try:
        assert [(i.integration, i.action, i.state) for i in await reopened.outbox.items()] == [
            ("pd", "trigger", "pending"), ("mail", "trigger", "pending"), ("mail", "trigger", "pending"),
            ("pd", "resolve", "pending")]
        assert await reopened.outbox.depth() == {"pd": 2, "mail": 2}
        assert Message.from_json((await reopened.outbox.items())[0].message) == MSG
    finally:
        await reopened.close()


async def test_retryable_failures_back_off_then_deliver_once(store):
    clock = FakeClock()
    pager = ScriptedPager(retryable(), retryable(), retryable())
    outbox, dispatcher, metrics = make(store, clock, {"pd": pager})
    await outbox.enqueue("pd", MSG)
    start = clock.time()
    assert await dispatcher.deliver_due() == 0
    item = (await store.outbox.items())[0]
    assert (item.attempts, item.due - start, item.last_error) == (1, 5.0, "error: HTTP 500")
    await clock.advance(4.9)
    assert await dispatcher.deliver_due() == 0 and pager.calls == 1  # not due yet
    await clock.advance(0.1)
    await dispatcher.deliver_due()
    assert (await store.outbox.items())[0].due - clock.time() == 10.0  # doubled
    await clock.advance(10)
    await dispatcher.deliver_due()
    assert (await store.outbox.items())[0].due - clock.time() == 20.0
    await clock.advance(20)
    assert await dispatcher.deliver_due() == 1
    assert pager.sent == [MSG] and pager.calls == 4
    item = (await store.outbox.items())[0]
    assert (item.state, item.attempts, item.done_at) == ("delivered", 4, clock.time())
    await clock.advance(3600)
    assert await dispatcher.deliver_due() == 0 and pager.calls == 4
    assert sample(metrics, "monitord_pages_sent_total", integration="pd", outcome="retry") == 3
    assert sample(metrics, "monitord_pages_sent_total", integration="pd", outcome="delivered") == 1
    assert sample(metrics, "monitord_page_outbox_depth", integration="pd") == 0
    [entry] = [e for e in await store.incidents.journal() if e.event == "page_delivery"]
    assert (entry.host, entry.incident_id, entry.decision, entry.outcome) == ("web1", 42, "pd", "delivered")
    assert entry.detail["attempts"] == 4 and entry.detail["dedup_key"] == "incident-42"


async def test_jitter_shortens_the_wait(store):
    clock = FakeClock()
    outbox, metrics = Outbox(store, clock), Metrics()
    dispatcher = Dispatcher(outbox, PagingConfig(retry=RetryPolicy(jitter=0.5)), metrics,
                            pagers={"pd": ScriptedPager(retryable())}, random=lambda: 0.5)
    await outbox.enqueue("pd", MSG)
    await dispatcher.deliver_due()
    assert (await store.outbox.items())[0].due - clock.time() == pytest.approx(5 * 0.75)


async def test_retry_after_is_honoured_up_to_the_cap(store):
    clock = FakeClock()
    outbox, dispatcher, _ = make(store, clock, {"pd": ScriptedPager(retryable("HTTP 429", retry_after=120),
                                                                    retryable("HTTP 429", retry_after=9999))})
    await outbox.enqueue("pd", MSG)
    await dispatcher.deliver_due()
    assert (await store.outbox.items())[0].due - clock.time() == 120
    await clock.advance(120)
    await dispatcher.deliver_due()
    assert (await store.outbox.items())[0].due - clock.time() == 300  # max_delay


async def test_not_retryable_is_dead_at_once_and_journaled(store):
    clock = FakeClock()
    pager = ScriptedPager(DeliveryError(Reason.AUTH, "HTTP 403: bad key", retryable=False))
    outbox, dispatcher, metrics = make(store, clock, {"pd": pager})
    await outbox.enqueue("pd", MSG)
    await dispatcher.deliver_due()
    await clock.advance(3600)
    await dispatcher.deliver_due()
    assert pager.calls == 1
    item = (await store.outbox.items())[0]
    assert item.state == "dead" and item.last_error == "auth: HTTP 403: bad key (not retryable)"
    [entry] = [e for e in await store.incidents.journal() if e.event == "page_delivery"]
    assert entry.outcome == "dead" and "bad key" in entry.reason
    assert sample(metrics, "monitord_pages_sent_total", integration="pd", outcome="dead") == 1


async def test_gives_up_after_max_age_or_attempts(store):
    clock = FakeClock()
    pager = ScriptedPager(*[retryable()] * 100)
    outbox, dispatcher, _ = make(store, clock, {"pd": pager, "mail": ScriptedPager(*[retryable()] * 100)},
                                 initial=60, max_delay=600, give_up_after=3600, max_attempts=3)
    await outbox.enqueue("pd", MSG)
    await deliver_all(dispatcher, clock)
    item = (await store.outbox.items())[0]
    assert (item.state, item.attempts) == ("dead", 3) and "gave up after 3 attempts" in item.last_error
    dispatcher.configure(PagingConfig(retry=RetryPolicy(initial=60, max_delay=600, give_up_after=3600)),
                         pagers={"mail": ScriptedPager(*[retryable()] * 100)})
    created = clock.time()
    await outbox.enqueue("mail", MSG)
    await deliver_all(dispatcher, clock, rounds=20)
    item = (await store.outbox.items())[1]
    assert item.state == "dead" and "gave up after" in item.last_error and item.done_at - created >= 3600
    # tries at 0, 60, 180, 420, 900, 1500, 2100, 2700, 3300 s; the 10th failure, at 3900 s, is past an hour
    assert (item.attempts, item.done_at - created) == (10, 3900)


async def test_resolve_never_overtakes_its_trigger(store):
    clock = FakeClock()
    pager = ScriptedPager(retryable())
    outbox, dispatcher, _ = make(store, clock, {"pd": pager})
    await outbox.enqueue("pd", MSG)
    await dispatcher.deliver_due()  # the trigger fails
    resolve = Message(dedup_key="incident-42", summary="web1 recovered", source="web1", action="resolve")
    other = Message(dedup_key="incident-43", summary="db1 down", source="db1")
    await outbox.enqueue("pd", resolve)
    await outbox.enqueue("pd", other)
    await dispatcher.deliver_due()
    assert [m.dedup_key for m in pager.sent] == ["incident-43"]  # the resolve waits behind the trigger
    assert await store.outbox.next_due() == clock.time() + 5  # the trigger's retry, not the waiting resolve
    await deliver_all(dispatcher, clock)
    assert [(m.dedup_key, m.action) for m in pager.sent] == [
        ("incident-43", "trigger"), ("incident-42", "trigger"), ("incident-42", "resolve")]


async def test_unknown_integration_is_dead(store):
    clock = FakeClock()
    outbox, dispatcher, _ = make(store, clock, {"pd": ScriptedPager()})
    await outbox.enqueue("gone", MSG)
    await dispatcher.deliver_due()
    item = (await store.outbox.items())[0]
    assert item.state == "dead" and "'gone' is not configured" in item.last_error


async def test_a_crashing_pager_is_retried_not_fatal(store):
    clock = FakeClock()
    outbox, dispatcher, _ = make(store, clock, {"pd": ScriptedPager(KeyError("bug"))})
    await outbox.enqueue("pd", MSG)
    await deliver_all(dispatcher, clock)
    assert [(i.state, i.attempts) for i in await store.outbox.items()] == [("delivered", 2)]


async def test_run_loop_wakes_on_enqueue_and_sleeps_until_due(store):
    clock = FakeClock()
    pager = ScriptedPager(retryable())
    outbox, dispatcher, _ = make(store, clock, {"pd": pager})
    task = asyncio.create_task(dispatcher.run())
    try:
        await clock.settle()
        await outbox.enqueue("pd", MSG)
        await clock.settle()
        assert pager.calls == 1 and pager.sent == []
        await clock.advance(4.9)
        assert pager.calls == 1
        await clock.advance(0.1)
        assert pager.sent == [MSG]
        await outbox.enqueue("pd", Message(dedup_key="incident-42", summary="ok", source="web1", action="resolve"))
        await clock.settle()
        assert [m.action for m in pager.sent] == ["trigger", "resolve"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancelling_the_dispatcher_mid_send_keeps_the_page(store):
    clock = FakeClock()
    pager = ScriptedPager("hang", timeout=60)
    outbox, dispatcher, _ = make(store, clock, {"pd": pager})
    await outbox.enqueue("pd", MSG)
    task = asyncio.create_task(dispatcher.run())
    await clock.settle()
    assert pager.calls == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(i.state, i.attempts) for i in await store.outbox.items()] == [("pending", 0)]


async def test_restart_sends_pending_pages_at_once(store, tmp_path):
    clock = FakeClock()
    outbox, dispatcher, _ = make(store, clock, {"pd": ScriptedPager(retryable(), retryable(), retryable())})
    await outbox.enqueue("pd", MSG)
    for wait in (5, 10, 0):
        await dispatcher.deliver_due()
        await clock.advance(wait)
    assert (await store.outbox.items())[0].attempts == 3 and await store.outbox.next_due() - clock.time() == 20
    # a new daemon on the same database does not wait those 20 s
    store2 = SQLiteStore(tmp_path / "state.db")
    try:
        pager = ScriptedPager()
        _, dispatcher2, _ = make(store2, clock, {"pd": pager})
        task = asyncio.create_task(dispatcher2.run())
        await clock.settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pager.sent == [MSG]
        assert [(i.state, i.attempts) for i in await store2.outbox.items()] == [("delivered", 4)]
    finally:
        await store2.close()


# --- real receivers ---------------------------------------------------------------------------


async def send_through(integrations: dict, *messages: Message, clock: FakeClock | None = None,
                       store=None, **retry) -> tuple[Dispatcher, SQLiteStore]:
    """Queue ``messages`` for every integration and deliver them all (fake clock for backoff)."""
    clock = clock or FakeClock(time.time())
    outbox = Outbox(store, clock)
    dispatcher = Dispatcher(outbox, paging(integrations, **retry), Metrics(), random=lambda: 0.0)
    try:
        for message in messages:
            for name in integrations:
                await outbox.enqueue(name, message)
        await deliver_all(dispatcher, clock)
    finally:
        await dispatcher.aclose()
    return dispatcher, store


ACK = Message(dedup_key="incident-42", summary="taken by Sato", source="web1", action="acknowledge")
RESOLVE = Message(dedup_key="incident-42", summary="web1 is back", source="web1", action="resolve")


@pytest.mark.integration
async def test_pagerduty_events_v2(receiver, store, tmp_path):
    pd = await receiver(default=202)
    key = secret_file(tmp_path, "pd.key", "R0UTINGKEY0123456789abcdef012345")
    await send_through({"pd": {"type": "pagerduty", "url": pd.url + "/v2/enqueue", "routing_key": key}},
                       MSG, ACK, RESOLVE, store=store)
    assert [(r.method, r.path) for r in pd.requests] == [("POST", "/v2/enqueue")] * 3
    trigger, ack, resolve = (r.json() for r in pd.requests)
    assert pd.requests[0].headers["Content-Type"] == "application/json"
    assert trigger["routing_key"] == "R0UTINGKEY0123456789abcdef012345"
    assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", "incident-42")
    payload = trigger["payload"]
    assert (payload["summary"], payload["source"], payload["severity"]) == (MSG.summary, "web1", "critical")
    assert payload["custom_details"] == {"check": "ping", "level": 1}
    assert datetime.datetime.fromisoformat(payload["timestamp"]).timestamp() == MSG.at
    assert (ack["event_action"], ack["dedup_key"], "payload" in ack) == ("acknowledge", "incident-42", False)
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", "incident-42")
    assert {i.state for i in await store.outbox.items()} == {"delivered"}


@pytest.mark.integration
async def test_opsgenie_alert_api(receiver, store, tmp_path):
    og = await receiver(default=202)
    key = secret_file(tmp_path, "og.key", "0pSg3n1e-key")
    await send_through({"og": {"type": "opsgenie", "url": og.url, "api_key": key, "tags": ["monitord"],
                               "responders": [{"type": "team", "name": "ops"}, {"type": "user", "name": "sato"}]}},
                       MSG, ACK, RESOLVE, store=store)
    create, ack, close = og.requests
    assert {r.headers["Authorization"] for r in og.requests} == {"GenieKey 0pSg3n1e-key"}
    body = create.json()
    assert create.path == "/v2/alerts"
    assert (body["message"], body["alias"], body["entity"], body["priority"]) == (MSG.summary, "incident-42",
                                                                                   "web1", "P1")
    assert body["details"] == {"check": "ping", "level": "1"} and body["tags"] == ["monitord"]
    assert body["responders"] == [{"type": "team", "name": "ops"}, {"type": "user", "username": "sato"}]
    assert (ack.path, ack.query) == ("/v2/alerts/incident-42/acknowledge", {"identifierType": "alias"})
    assert (close.path, close.query) == ("/v2/alerts/incident-42/close", {"identifierType": "alias"})
    assert close.json()["note"] == "web1 is back"


@pytest.mark.integration
async def test_slack_incoming_webhook(receiver, store, tmp_path):
    slack = await receiver(default=200)
    url = secret_file(tmp_path, "slack.url", slack.url + "/services/T000/B000/XXXXSECRET")
    message = Message(dedup_key="incident-7", summary="db1 <primary> & replica down", source="db1",
                      severity="warning", body="詳細: レプリケーション停止", details={"check": "postgres"})
    await send_through({"chat": {"type": "slack", "webhook_url": url}}, message,
                       Message(dedup_key="incident-7", summary="db1 ok", source="db1", action="resolve"),
                       store=store)
    posted, resolved = (r.json() for r in slack.requests)
    assert slack.requests[0].path == "/services/T000/B000/XXXXSECRET"
    assert posted["text"] == ":large_yellow_circle: *WARNING* db1 &lt;primary&gt; &amp; replica down (db1)"
    assert posted["blocks"][1]["text"]["text"] == "詳細: レプリケーション停止"
    assert posted["blocks"][2]["fields"] == [{"type": "mrkdwn", "text": "*check*\npostgres"}]
    assert "incident-7" in posted["blocks"][-1]["elements"][0]["text"]
    assert resolved["text"] == ":white_check_mark: *Resolved* db1 ok (db1)"


@pytest.mark.integration
async def test_webhook_is_signed_with_hmac_and_timestamp(receiver, store, tmp_path):
    hook = await receiver(default=204)
    secret = "s3cr3t-shared"
    await send_through({"hook": {"type": "webhook", "url": hook.url + "/monitord",
                                 "secret": secret_file(tmp_path, "hook.key", secret)}}, MSG, store=store)
    [request] = hook.requests
    timestamp, signature = request.headers["X-Monitord-Timestamp"], request.headers["X-Monitord-Signature"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert signature == "sha256=" + expected
    assert abs(int(timestamp) - time.time()) < 60
    assert webhook_mod.verify(secret, timestamp, request.body, signature, now=time.time())
    assert not webhook_mod.verify(secret, timestamp, request.body.replace(b"web1", b"web2"), signature, time.time())
    assert not webhook_mod.verify("wrong", timestamp, request.body, signature, time.time())
    assert not webhook_mod.verify(secret, timestamp, request.body, signature, now=int(timestamp) + 3600)  # replay
    doc = request.json()
    assert (doc["version"], doc["dedup_key"], doc["action"], doc["severity"], doc["source"]) == (
        1, "incident-42", "trigger", "critical", "web1")
    assert doc["details"] == {"check": "ping", "level": 1}
    assert request.headers["X-Monitord-Dedup-Key"] == "incident-42"


@pytest.mark.integration
async def test_500_twice_then_accepted_is_delivered_exactly_once(receiver, store, tmp_path):
    pd = await receiver(answers=[500, 502], default=202)
    clock = FakeClock(time.time())
    dispatcher, _ = await send_through(
        {"pd": {"type": "pagerduty", "url": pd.url, "routing_key": secret_file(tmp_path, "k", "KEY")}},
        MSG, clock=clock, store=store)
    assert len(pd.requests) == 3
    assert len({r.body for r in pd.requests}) == 1  # the same event each time
    [item] = await store.outbox.items()
    assert (item.state, item.attempts) == ("delivered", 3)
    assert item.done_at - item.created_at == pytest.approx(15, abs=0.5)  # 5 s + 10 s of fake backoff
    assert sample(dispatcher.metrics, "monitord_pages_sent_total", integration="pd", outcome="retry") == 2


@pytest.mark.integration
async def test_400_is_not_retried(receiver, store, tmp_path):
    pd = await receiver(default=400)
    await send_through({"pd": {"type": "pagerduty", "url": pd.url, "routing_key": secret_file(tmp_path, "k", "K")}},
                       MSG, store=store)
    [item] = await store.outbox.items()
    assert len(pd.requests) == 1 and item.state == "dead"
    assert item.last_error.startswith("protocol: http://127.0.0.1:") and "HTTP 400" in item.last_error


@pytest.mark.integration
async def test_429_retry_after_is_honoured(receiver, store, tmp_path):
    pd = await receiver(answers=[(429, {"Retry-After": "42"})], default=202)
    clock = FakeClock(time.time())
    await send_through({"pd": {"type": "pagerduty", "url": pd.url, "routing_key": secret_file(tmp_path, "k", "K")}},
                       MSG, clock=clock, store=store)
    [item] = await store.outbox.items()
    assert len(pd.requests) == 2 and (item.state, item.attempts) == ("delivered", 2)
    assert item.done_at - item.created_at == pytest.approx(42, abs=0.5)


@pytest.mark.integration
async def test_a_receiver_that_hangs_times_out_and_is_retried(receiver, store, tmp_path):
    hook = await receiver(answers=["hang"], default=200)
    started = time.monotonic()
    await send_through({"hook": {"type": "webhook", "url": hook.url, "timeout": "300ms",
                                 "secret": secret_file(tmp_path, "k", "K")}}, MSG, store=store)
    assert time.monotonic() - started < 5
    [item] = await store.outbox.items()
    assert len(hook.requests) == 2 and (item.state, item.attempts) == ("delivered", 2)


@pytest.mark.integration
async def test_refused_connection_and_missing_secret_are_retried(receiver, store, tmp_path):
    port = free_port()
    key = tmp_path / "late.key"
    clock = FakeClock(time.time())
    outbox = Outbox(store, clock)
    config = paging({"pd": {"type": "pagerduty", "url": f"http://127.0.0.1:{port}/",
                            "routing_key": {"file": str(key)}}})
    dispatcher = Dispatcher(outbox, config, Metrics(), random=lambda: 0.0)
    try:
        await outbox.enqueue("pd", MSG)
        await dispatcher.deliver_due()
        assert (await store.outbox.items())[0].last_error.startswith("auth: secret: cannot read secret file")
        key.write_text("KEY\n")
        await clock.advance(5)
        await dispatcher.deliver_due()
        assert (await store.outbox.items())[0].last_error.startswith("refused:")
        pd = await receiver(port=port)
        await clock.advance(10)
        assert await dispatcher.deliver_due() == 1
        assert len(pd.requests) == 1 and pd.requests[0].json()["routing_key"] == "KEY"
    finally:
        await dispatcher.aclose()


# --- e-mail -------------------------------------------------------------------------------------


class MailCatcher:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self):
        self.mails: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path):
    from aiosmtpd.controller import Controller

    controllers = []

    def start(**kwargs) -> tuple[MailCatcher, int]:
        catcher, port = MailCatcher(), free_port()
        controller = Controller(catcher, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return catcher, port

    yield start
    for controller in controllers:
        controller.stop()


JAPANESE = Message(
    dedup_key="incident-42-notice", source="web1", severity="critical", at=1_800_000_000.0,
    summary="【障害のお知らせ】web1 が応答しません",
    body="お客様各位\n\nweb1 への ping に応答がありません。\n現在、担当者が対応しております。\n",
    to=("顧客 担当者 <customer@example.jp>", "ops@example.jp"))


@pytest.mark.integration
async def test_email_japanese_subject_and_body(smtp_server, store):
    catcher, port = smtp_server()
    await send_through({"mail": {"type": "email", "host": "127.0.0.1", "port": port, "tls": "none",
                                 "from": "監視センター <noc@example.jp>", "subject_prefix": "[monitord] "}},
                       JAPANESE, store=store)
    [(mail_from, rcpt_tos, raw)] = catcher.mails
    assert mail_from == "noc@example.jp" and rcpt_tos == ["customer@example.jp", "ops@example.jp"]
    assert all(b < 0x80 for b in raw), "the message must be 7-bit clean on the wire"
    assert b"Subject: [monitord] =?utf-8?b?" in raw
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert mail["Subject"] == "[monitord] 【障害のお知らせ】web1 が応答しません"
    assert mail["From"].addresses[0].display_name == "監視センター"
    assert mail["From"].addresses[0].addr_spec == "noc@example.jp"
    assert [a.addr_spec for a in mail["To"].addresses] == ["customer@example.jp", "ops@example.jp"]
    assert mail["To"].addresses[0].display_name == "顧客 担当者"
    assert mail.get_content_type() == "text/plain" and mail.get_content_charset() == "utf-8"
    assert mail["Content-Transfer-Encoding"] in ("base64", "quoted-printable")
    # text is base64-encoded in its canonical form, CRLF line breaks (RFC 2045 6.8)
    assert mail.get_content() == JAPANESE.body.replace("\n", "\r\n")
    assert mail["Message-ID"].endswith("@example.jp>") and mail["X-Monitord-Dedup-Key"] == "incident-42-notice"
    assert datetime.datetime.timestamp(mail["Date"].datetime) == JAPANESE.at
    assert mail["Auto-Submitted"] == "auto-generated"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.integration
async def test_email_starttls_and_auth(smtp_server, store, tmp_path):
    from aiosmtpd.smtp import AuthResult

    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login, auth_data.password, session.ssl is not None))
        # handled=False: aiosmtpd itself answers 535 to a failed login
        return AuthResult(success=auth_data.password == b"p\xc3\xa4ss", handled=False)

    catcher, port = smtp_server(tls_context=server_tls, require_starttls=True, authenticator=authenticator,
                                auth_required=True)
    base = {"type": "email", "host": "127.0.0.1", "port": port, "tls": "starttls", "ca_file": str(cert),
            "from": "noc@example.jp", "to": ["oncall@example.jp"], "username": "noc"}
    good = {**base, "password": secret_file(tmp_path, "pw", "päss")}
    await send_through({"mail": good}, MSG, store=store)
    [(_, rcpt, raw)] = catcher.mails
    assert rcpt == ["oncall@example.jp"] and logins[0][1:] == (b"noc", b"p\xc3\xa4ss", True)
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert mail["Subject"] == MSG.summary and "check: ping" in mail.get_content()

    bad = {**base, "password": secret_file(tmp_path, "pw2", "wrong")}
    await send_through({"bad": bad}, Message(dedup_key="x", summary="s", source="h"), store=store)
    item = (await store.outbox.items())[-1]
    assert item.state == "dead" and item.last_error.startswith("auth:") and "535" in item.last_error
    assert len(catcher.mails) == 1

    untrusted = {**good, "ca_file": None}
    await send_through({"untrusted": untrusted}, Message(dedup_key="y", summary="s", source="h"), store=store)
    item = (await store.outbox.items())[-1]
    assert item.state == "dead" and "certificate" in item.last_error


@pytest.mark.integration
async def test_email_without_recipients_is_dead(store):
    await send_through({"mail": {"type": "email", "host": "127.0.0.1", "port": free_port(), "tls": "none",
                                 "from": "noc@example.jp"}}, MSG, store=store)
    assert (await store.outbox.items())[0].state == "dead" and "no recipients" in (await store.outbox.items())[0].last_error


# --- kill -9 ------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_page_queued_before_kill_9_is_delivered_once_after_restart(receiver, tmp_path):
    port = free_port()  # nobody listens yet: the endpoint is down
    db = tmp_path / "state.db"
    config = json.dumps({"integrations": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook",
                                                    "timeout": "1s",
                                                    "secret": secret_file(tmp_path, "hook.key", "K")}},
                         "retry": {"initial": "200ms", "max_delay": "1s"}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def attempts() -> int:
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT COALESCE(SUM(attempts), 0) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()

    first = Proc([sys.executable, "-m", "tests.pager_proc", str(db), config, MSG.to_json()], tmp_path / "first.log",
                 env=env, cwd=REPO)
    try:
        await asyncio.to_thread(wait_for, lambda: attempts() >= 2, 20, "failed attempts while the endpoint is down")
    finally:
        first.stop(signal.SIGKILL)
    assert "queued True" in first.output() and first.popen.returncode == -signal.SIGKILL

    hook = await receiver(port=port, default=200)
    second = Proc([sys.executable, "-m", "tests.pager_proc", str(db), config, MSG.to_json()],
                  tmp_path / "second.log", env=env, cwd=REPO)
    try:
        await asyncio.to_thread(wait_for, lambda: "delivered" in second.output(), 20, "the delivery after restart")
        await asyncio.sleep(1.0)  # several dispatcher polls: nothing more may arrive
    finally:
        second.stop(signal.SIGKILL)
    assert "queued False" in second.output(), second.output()  # re-queueing the same page was a no-op
    assert len(hook.requests) == 1
    assert hook.requests[0].json()["dedup_key"] == "incident-42"
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT state, attempts FROM outbox").fetchall()
        journal = con.execute("SELECT event, decision, outcome FROM journal").fetchall()
    finally:
        con.close()
    assert len(rows) == 1 and rows[0][0] == "delivered" and rows[0][1] >= 3
    assert journal == [("page_delivery", "hook", "delivered")]
