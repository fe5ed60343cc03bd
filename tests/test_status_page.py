"""The status page without a browser: language negotiation, host states, rendering in ja and
en from the same views as the read API, escaping of what config and probes say, SLA timers
at render time, read access (open, token, off) and the acknowledge form (token, origin, PRG)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitord.config import parse_config
from monitord.edge.api import Api
from monitord.edge.listener import Listener
from monitord.edge.metrics import Metrics
from monitord.edge.statuspage import StatusPage, host_state, language, snapshot
from monitord.records.state import SQLiteStore
from monitord.run.checkstate import CheckState
from monitord.shared.http import Refusal
from monitord.shared.results import Reason, Result, Status
from tests.fakeclock import FakeClock

TOKEN = "page-t0ken"
NOW = 1_800_000_000.0
EVIL = '<script>alert("x")</script>&'


def config_text(tmp: Path, reads: str = "open", lang: str = "ja") -> str:
    (tmp / "api.token").write_text(TOKEN + "\n")
    return json.dumps({
        "daemon": {"state_path": str(tmp / "state.db"), "metrics_listen": "127.0.0.1:0",
                   "api_token": {"file": str(tmp / "api.token")},
                   "api": {"reads": reads, "page_refresh": "45s", "page_lang": lang}},
        "groups": {"web": {}, "db": {}},
        "hosts": {
            "web1": {"address": "127.0.0.1", "groups": ["web"], "checks": {"http": {"kind": "tcp", "port": 80}}},
            "web2": {"address": "127.0.0.1", "groups": ["web"], "checks": {"http": {"kind": "tcp", "port": 80}}},
            "db1": {"address": "127.0.0.1", "groups": ["db"], "checks": {"pg": {"kind": "tcp", "port": 5432}}},
            "lone": {"address": "127.0.0.1", "checks": {"ssh": {"kind": "tcp", "port": 22}}},
            "quar": {"address": "127.0.0.1", "groups": ["db"], "checks": {"ssh": {"kind": "tcp", "port": 22}}},
        },
    })


class FakeLive:
    """The daemon's side of the page: health and due times, as the real daemon answers them."""

    def __init__(self, blast: str | None = None):
        self.blast = blast

    def status(self) -> dict:
        return {"version": "9.9", "started_at": NOW - 3700, "uptime": 3700.0, "dry_run": False, "hosts": 5,
                "checks": 5, "scheduler_lateness": 2.0, "last_reload": {"at": NOW - 60, "ok": False,
                                                                         "error": f"bad {EVIL}"},
                "store": {"ok": True, "fault": None},
                "blast_radius": {"active": self.blast is not None, "reason": self.blast}}

    def due(self) -> dict:
        return {}

    def explain(self, host: str) -> dict:
        raise AssertionError("the page does not explain")


def result(status: Status, summary: str) -> Result:
    return Result(status, Reason.NONE if status is Status.OK else Reason.REFUSED, summary, 0.01, NOW - 30)


@pytest.fixture
async def fleet(tmp_path):
    """A store with web1 ok, web2 failing hard at level 2 with an open incident (pages, an
    action, SLA timers), db1 soft, lone never run, quar quarantined; a stored window on db1."""
    config = parse_config(config_text(tmp_path))
    store = SQLiteStore(config.daemon.state_path)
    specs = {s.host: s for s in config.checks()}
    await store.checks.put(specs["web1"].id, CheckState(Status.OK, True, 1, NOW - 30, NOW - 900,
                                                        None, result(Status.OK, "port 80 open")), None)
    incident = await store.incidents.open("web2", "http", "tcp", NOW - 1200, NOW - 1300, f"web2 down {EVIL}")
    await store.checks.put(specs["web2"].id, CheckState(Status.CRITICAL, True, 3, NOW - 30, NOW - 1300, NOW - 1300,
                                                        result(Status.CRITICAL, f"refused {EVIL}")), incident)
    await store.checks.put_escalation("web2", {"level": 2, "phase": "acting", "incident_id": incident})
    await store.checks.put(specs["db1"].id, CheckState(Status.CRITICAL, False, 1, NOW - 30, NOW - 30, NOW - 30,
                                                       result(Status.CRITICAL, "refused")), None)
    from monitord.records.state import JournalEntry
    async with store.transaction():
        await store.incidents.append(JournalEntry(ts=NOW - 1100, event="decided", host="web2", incident_id=incident,
                                                  decision="power_reset", reason=f"reset via BMC {EVIL}", detail={"level": 2}))
    await store.outbox.open_page(incident, "web2", "failure", "critical", "ops", "web2 down", NOW - 1150)
    await store.outbox.open_page(incident, "web2", "dispatch", "critical", "ops", "web2 dispatch", NOW - 1000)
    await store.incidents.start_sla(incident, "engineer_on_site", "web2", NOW - 1000, NOW + 3600)
    await store.incidents.start_sla(incident, "replacement_on_network", "web2", NOW - 5000, NOW - 600)
    await store.control.quarantine("quar", NOW - 7200, f"compromised {EVIL}", "aoki")
    await store.control.add_maintenance("host:db1", NOW - 60, NOW + 7200, f"swap {EVIL}", "sato")
    await store.control.add_maintenance("host:lone", NOW - 7200, NOW - 60, "over", "sato")
    yield config, store, incident
    await store.close()


class Page(HTMLParser):
    """The parts of the page the tests look at: visible text, the host grid and forms."""

    def __init__(self, html: str):
        super().__init__()
        self.text: list[str] = []
        self.hosts: dict[str, str] = {}
        self.forms: list[str] = []
        self.refresh = None
        self.lang = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if "data-host" in a:
            self.hosts[a["data-host"]] = a["data-state"]
        if tag == "form":
            self.forms.append(a["action"])
        if tag == "meta" and a.get("http-equiv") == "refresh":
            self.refresh = a["content"]
        if tag == "html":
            self.lang = a["lang"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def test_language_follows_query_then_accept_language_then_default():
    assert language("en", "ja", "ja") == "en"
    assert language(None, "fr-CH, en-US;q=0.8, ja;q=0.9", "en") == "ja"
    assert language(None, "en-GB;q=0.5, ja;q=0", "ja") == "en"  # q=0: not acceptable
    assert language(None, "fr, de", "en") == "en"
    assert language(None, "", "ja") == "ja"
    assert language(None, "EN;q=x, ja;q=0.1", "ja") == "ja"  # a broken q counts as 0
    assert language(None, "en, ja", "ja") == "en"  # equal q: the first named
    with pytest.raises(Refusal) as refused:
        language("fr", "en", "ja")
    assert refused.value.status == 400 and "lang must be ja or en" in refused.value.why


def test_host_state_worst_first_and_overrides():
    def view(*states, maintenance=(), quarantined=None):
        return {"checks": [{"state": s} for s in states], "maintenance": list(maintenance),
                "quarantined": quarantined}

    assert host_state(view("ok", "ok")) == "ok"
    assert host_state(view("ok", "soft")) == "warning"
    assert host_state(view("soft", "hard", "unknown")) == "critical"
    assert host_state(view("ok", "unknown")) == "unknown"
    assert host_state(view()) == "unknown"
    assert host_state(view("hard", maintenance=["1"])) == "maintenance"  # no action is taken on it
    assert host_state(view("hard", maintenance=["1"], quarantined={"since": 1, "reason": "x"})) == "quarantined"


async def test_snapshot_reads_the_views_at_render_time(fleet):
    config, store, incident = fleet
    data = await snapshot(config, store, NOW, {}, FakeLive().status())
    assert {h["name"]: h["state"] for h in data["hosts"]} == {
        "web1": "ok", "web2": "critical", "db1": "maintenance", "lone": "unknown", "quar": "quarantined"}
    assert {g: [h["name"] for h in m] for g, m in data["groups"].items()} == {
        "web": ["web1", "web2"], "db": ["db1", "quar"], "": ["lone"]}
    assert data["counts"] == {"critical": 1, "warning": 0, "unknown": 1, "maintenance": 1, "quarantined": 1, "ok": 1}
    [open_incident] = data["incidents"]
    assert open_incident["id"] == incident and open_incident["level"] == 2 and open_incident["unacked"] == 2
    assert {t["name"]: t["left"] for t in open_incident["sla"]} == {"engineer_on_site": 3600.0,
                                                                   "replacement_on_network": -600.0}
    assert [w["target"] for w in data["maintenance"]] == ["host:db1"]  # the ended window is left out
    assert [h["name"] for h in data["quarantined"]] == ["quar"]
    later = await snapshot(config, store, NOW + 600, {}, FakeLive().status())  # counts down as time passes
    assert {t["name"]: t["left"] for t in later["incidents"][0]["sla"]}["engineer_on_site"] == 3000.0


async def serve(config, store, live=None, clock=None):
    clock = clock or FakeClock(NOW)
    listener = Listener(Metrics())
    api = Api(store, clock, lambda: config)
    api.install(listener.app)
    StatusPage(api, live or FakeLive()).install(listener.app)
    return TestServer(listener.app, host="127.0.0.1")


async def get(server: TestServer, path: str = "/", **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as http, http.get(server.make_url(path), headers=headers) as answer:
        return answer.status, await answer.text(), answer


@pytest.mark.parametrize("lang, labels", [
    ("ja", ["対応中の障害", "障害", "正常", "隔離中", "メンテナンス中", "不明", "技術者の現地到着", "確認 (ACK)",
            "一斉障害ガード", "作動していません", "1h1m40s"]),
    ("en", ["Open incidents", "critical", "ok", "quarantined", "maintenance", "unknown", "Engineer on site",
            "Acknowledge", "Blast-radius guard", "not active", "1h1m40s"]),
])
async def test_the_page_in_each_language(fleet, lang, labels):
    config, store, incident = fleet
    async with await serve(config, store) as server:
        status, html, answer = await get(server, f"/?lang={lang}")
    assert status == 200 and answer.content_type == "text/html"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    page = Page(html)
    assert page.lang == lang and page.refresh == f"45; url=/?lang={lang}"
    for label in labels:
        assert label in page.words, label
    assert page.hosts == {"web1": "ok", "web2": "critical", "db1": "maintenance", "lone": "unknown",
                          "quar": "quarantined"}
    assert page.forms == [f"/incidents/{incident}/ack"]
    assert "<script" not in html and "<link" not in html and "src=" not in html  # no script, no external assets
    assert "2026-" in page.words or "2027-" in page.words  # times in the business-hours zone
    assert "JST" in page.words


async def test_accept_language_and_the_configured_default(fleet, tmp_path):
    config, store, _ = fleet
    async with await serve(config, store) as server:
        assert Page((await get(server, "/", **{"Accept-Language": "en-US,en;q=0.9"}))[1]).lang == "en"
        assert Page((await get(server, "/", **{"Accept-Language": "de"}))[1]).lang == "ja"
        status, html, answer = await get(server, "/?lang=xx", **{"Accept-Language": "en"})
    assert status == 400 and answer.content_type == "text/html" and "lang must be ja or en" in Page(html).words
    english = parse_config(config_text(tmp_path, lang="en"))
    async with await serve(english, store) as server:
        assert Page((await get(server, "/"))[1]).lang == "en"


async def test_everything_from_config_and_probes_is_escaped(fleet):
    config, store, _ = fleet
    async with await serve(config, store, FakeLive(blast=f"3 of 5 hosts down {EVIL}")) as server:
        _, html, _ = await get(server, "/?lang=en")
    assert "<script>" not in html
    # the incident's and the failing check's summaries, the action's reason, the reload error, the
    # quarantine's and the window's reasons, the guard's reason
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;") == 7
    words = Page(html).words
    assert "ACTIVE: no power action is taken 3 of 5 hosts down" in words
    assert "OVERDUE by 10m" in words and "FAILED, running the previous config" in words
    assert "decided power_reset — reset via BMC" in words  # what was done, from the journal


async def test_sla_timers_are_computed_when_the_page_is_rendered(fleet):
    config, store, incident = fleet
    clock = FakeClock(NOW)
    async with await serve(config, store, clock=clock) as server:
        first = Page((await get(server, "/?lang=en"))[1]).words
        await clock.advance(1800)  # a later render, no waiting
        later = Page((await get(server, "/?lang=en"))[1]).words
    assert "Engineer on site" in first and re.search(r"Engineer on site \S+ \S+ \S+ 1h ", first)
    assert re.search(r"Engineer on site \S+ \S+ \S+ 30m ", later)
    assert "OVERDUE by 40m" in later


@pytest.mark.parametrize("reads", ["token", "off"])
async def test_reads_follow_the_read_api(fleet, tmp_path, reads):
    config, store, _ = fleet
    guarded = parse_config(config_text(tmp_path, reads=reads))
    basic = "Basic " + base64.b64encode(f"noc:{TOKEN}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"noc:guess").decode()
    async with await serve(guarded, store) as server:
        bare = await get(server, "/?lang=en")
        with_basic = await get(server, "/?lang=en", Authorization=basic)
        with_bearer = await get(server, "/?lang=en", Authorization=f"Bearer {TOKEN}")
        with_wrong = await get(server, "/?lang=en", Authorization=wrong)
    if reads == "off":
        for status, html, answer in (bare, with_basic, with_bearer):
            assert status == 403 and answer.content_type == "text/html"
            assert "the status page is off, as the read API (daemon.api.reads)" in Page(html).words
        return
    assert bare[0] == 401 and bare[2].headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "missing or wrong bearer token" in Page(bare[1]).words and "web2" not in bare[1]
    assert with_wrong[0] == 401
    assert with_basic[0] == with_bearer[0] == 200 and "web2" in Page(with_basic[1]).hosts


async def post_ack(server, incident, form: dict | None, **headers: str):
    async with aiohttp.ClientSession() as http, http.post(
            server.make_url(f"/incidents/{incident}/ack"), data=form, headers=headers,
            allow_redirects=False) as answer:
        return answer.status, await answer.text(), answer


async def test_ack_through_the_form_uses_the_api_path_then_redirects_back(fleet):
    config, store, incident = fleet
    async with await serve(config, store) as server:
        origin = f"http://{server.host}:{server.port}"
        status, _, answer = await post_ack(server, incident, {"token": TOKEN, "by": "<b>sato</b>", "lang": "en"},
                                           Origin=origin)
        assert status == 303 and answer.headers["Location"] == f"/?lang=en&acked={incident}&count=2"
        _, html, _ = await get(server, answer.headers["Location"])
        again = await post_ack(server, incident, {"token": TOKEN, "lang": "en"}, Origin=origin)
    page = Page(html)
    assert f"Incident #{incident}: 2 page(s) acknowledged." in page.words
    assert page.forms == []  # nothing left to acknowledge
    assert "acknowledged by <b>sato</b> at" in page.words and "&lt;b&gt;sato" in html
    assert page.refresh == "45; url=/?lang=en"  # the reload does not repeat the confirmation
    assert {p.acked_by for p in await store.outbox.pages(open_only=False, incident_id=incident)} == {"<b>sato</b>"}
    acks = [e for e in await store.incidents.journal(incident_id=incident) if e.event == "ack"]
    assert [(e.decision, e.reason, e.detail["by"]) for e in acks] == [
        ("acknowledged", "2 page(s) acknowledged", "<b>sato</b>"), ("acknowledged", "0 page(s) acknowledged",
                                                                    "status page")]
    assert again[2].headers["Location"] == f"/?lang=en&acked={incident}&count=0"


@pytest.mark.parametrize("form, headers, status, why", [
    ({"lang": "en"}, {}, 403, "missing or wrong bearer token"),
    ({"token": "guess", "lang": "en"}, {}, 403, "missing or wrong bearer token"),
    ({"token": TOKEN, "lang": "en"}, {"Origin": "http://evil.example"}, 403, "the form was posted from another site"),
    ({"token": TOKEN, "lang": "en"}, {"Origin": "null"}, 403, "the form was posted from another site"),
    ({"token": TOKEN, "lang": "en"}, {"Sec-Fetch-Site": "cross-site"}, 403, "the form was posted from another site"),
    (None, {"Content-Type": "application/json"}, 415, "post the page's form"),
])
async def test_ack_refusals_are_pages_with_the_reason(fleet, form, headers, status, why):
    config, store, incident = fleet
    async with await serve(config, store) as server:
        answer = await post_ack(server, incident, form, **headers)
        missing = await post_ack(server, 999, {"token": TOKEN, "lang": "en"})
    assert answer[0] == status and answer[2].content_type == "text/html"
    assert why in Page(answer[1]).words and "Traceback" not in answer[1]
    assert missing[0] == 404 and "no incident #999" in Page(missing[1]).words
    assert all(p.acked_at is None for p in await store.outbox.pages(open_only=False, incident_id=incident))


async def test_the_page_without_a_token_configured_refuses_acks(tmp_path):
    text = json.loads(config_text(tmp_path))
    del text["daemon"]["api_token"]
    config = parse_config(json.dumps(text))
    store = SQLiteStore(config.daemon.state_path)
    try:
        async with await serve(config, store) as server:
            assert (await get(server, "/?lang=en"))[0] == 200
            status, html, _ = await post_ack(server, 1, {"token": "", "lang": "en"})
    finally:
        await store.close()
    assert status == 403 and "the API is off: set daemon.api_token" in Page(html).words


def test_both_languages_have_every_label():
    from monitord.edge.statuspage import STATES, words

    assert set(words("ja")) == set(words("en"))
    assert {*STATES, "ev_decided", "ev_outcome", "ev_blocked", "engineer_on_site"} <= set(words("en"))


def test_html_parser_sees_text():  # the helper the tests above rely on
    page = Page('<html lang="en"><li data-host="a" data-state="ok">x <b>y</b></li><form action="/f"></form></html>')
    assert page.hosts == {"a": "ok"} and page.forms == ["/f"] and page.words == "x y" and page.lang == "en"
