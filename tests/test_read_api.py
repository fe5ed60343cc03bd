"""The read API and ``explain`` against a real running daemon whose fleet stands in several
states at once: a healthy host, a host dispatched at level 3 (no power control), its child
held behind it (parent down), a host in maintenance, a quarantined host and a host in dry run,
each failing with a dead BMC; a closed incident from ten days ago."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from monitord.records.state import SQLiteStore
from tests.daemon_proc import Daemon, wait_for
from tests.support import free_port

pytestmark = pytest.mark.integration

TOKEN = "read-api-t0ken"


def fleet(tmp: Path, port: int, open_port: int, reads: str = "open") -> Path:
    dead, closed = free_port(), free_port()  # nothing listens on either
    (tmp / "api.token").write_text(TOKEN + "\n")
    (tmp / "api.token").chmod(0o600)
    now = dt.datetime.now(dt.timezone.utc)
    bmc = {"address": "127.0.0.1", "port": dead, "username": "admin", "password": {"file": str(tmp / "api.token")}}
    down = {"closed": {"kind": "tcp", "port": closed, "host_critical": True}}
    config = {
        "daemon": {"state_path": str(tmp / "state.db"), "metrics_listen": f"127.0.0.1:{port}",
                   "api_token": {"file": str(tmp / "api.token")}, "api": {"reads": reads},
                   "alertmanager": {"token": {"file": str(tmp / "api.token")}}},  # schemathesis posts with it
        "defaults": {"intervals": {"tcp": "1s"}, "retry_interval": "500ms", "max_attempts": 2, "timeout": "800ms"},
        "escalation": {"blast_radius": {"max_down_percent": 100, "max_down_hosts": 100}},
        "hosts": {
            "web": {"address": "127.0.0.1", "checks": {"http": {"kind": "tcp", "port": open_port}}},
            "db": {"address": "127.0.0.1", "checks": down},  # no power control: level 3 at once
            "child": {"address": "127.0.0.1", "parents": ["db"], "bmc": bmc, "checks": down},
            "maint": {"address": "127.0.0.1", "bmc": bmc, "checks": down},
            "quar": {"address": "127.0.0.1", "bmc": bmc, "checks": down},
            "dry": {"address": "127.0.0.1", "bmc": bmc, "checks": down,
                    "defaults": {"remediation": {"dry_run": True}}},
        },
        "paging": {"integrations": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{dead}/page",
                                             "secret": {"file": str(tmp / "api.token")}}},
                   "people": {"aoki": {"notify": ["hook"]}},
                   "policies": {"ops": {"tiers": [{"targets": ["aoki"], "ack_timeout": "15m"}]}},
                   "routes": [{"policy": "ops"}]},
        "maintenance": {"swap": {"hosts": ["maint"], "reason": "disk swap",
                                 "start": (now - dt.timedelta(hours=1)).isoformat(),
                                 "end": (now + dt.timedelta(days=1)).isoformat()}},
    }
    path = tmp / "monitord.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def call(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, object]:
    """One request; (status, parsed JSON answer)."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readapi")
    listener = socket.create_server(("127.0.0.1", 0))
    port = free_port()
    config = fleet(tmp, port, listener.getsockname()[1])
    store = SQLiteStore(tmp / "state.db")
    old = time.time() - 10 * 86400
    closed = asyncio.run(store.incidents.open("web", "http", "tcp", old, old, "refused"))
    asyncio.run(store.incidents.close(closed, old + 600))
    asyncio.run(store.control.quarantine("quar", time.time(), "compromised", "aoki"))
    asyncio.run(store.close())
    daemon = Daemon(tmp, config, port).start()
    try:
        get = lambda path: call(port, "GET", path)[1]  # noqa: E731
        blocked = lambda host: get(f"/api/v1/hosts/{host}")["escalation"]["blocked"]  # noqa: E731
        wait_for(lambda: get("/api/v1/hosts/db")["escalation"]["level"] == 3, 60, "db at level 3")
        for host, guard in (("child", "parent_down"), ("maint", "maintenance"), ("quar", "quarantined"),
                            ("dry", "dry_run")):
            wait_for(lambda: blocked(host) == guard, 60, f"{host} blocked by {guard}")
        yield daemon, port
    finally:
        listener.close()
        daemon.proc.stop(signal.SIGKILL)


def verdicts(explained: dict) -> dict[str, str]:
    return {g["guard"]: g["verdict"] for g in explained["guards"]}


def test_status_tells_the_daemons_health(live):
    _, port = live
    status, body = call(port, "GET", "/api/v1/status")
    assert status == 200
    assert body["hosts"] == 6 and body["checks"] == 6
    assert body["store"] == {"ok": True, "fault": None} and body["last_reload"]["ok"] is True
    assert body["uptime"] > 0 and body["scheduler_lateness"] >= 0 and body["version"]


def test_hosts_show_checks_ladder_maintenance_and_quarantine(live):
    _, port = live
    _, hosts = call(port, "GET", "/api/v1/hosts")
    by_name = {h["name"]: h for h in hosts}
    assert set(by_name) == {"web", "db", "child", "maint", "quar", "dry"}
    [web_check] = by_name["web"]["checks"]
    assert web_check["state"] == "ok" and web_check["next_run"] > time.time() - 5
    [db_check] = by_name["db"]["checks"]
    assert db_check["state"] == "hard" and db_check["incident"] is not None and db_check["summary"]
    assert by_name["db"]["escalation"]["phase"] == "dispatched"
    assert by_name["maint"]["maintenance"] == ["config:swap"] and by_name["web"]["maintenance"] == []
    assert by_name["quar"]["quarantined"]["reason"] == "compromised" and by_name["web"]["quarantined"] is None
    assert call(port, "GET", "/api/v1/hosts/nosuch") == (404, {"error": "no such host in the running config"})


def test_incidents_filter_and_carry_level_pages_sla_and_journal(live):
    _, port = live
    _, open_ = call(port, "GET", "/api/v1/incidents?state=open")
    _, closed = call(port, "GET", "/api/v1/incidents?state=closed")
    assert [i["host"] for i in closed] == ["web"] and not closed[0]["open"]
    assert {i["host"] for i in open_} == {"db", "child", "maint", "quar", "dry"} and all(i["open"] for i in open_)
    [db] = [i for i in open_ if i["host"] == "db"]
    assert db["level"] == 3
    assert [t["name"] for t in db["sla"]] == ["engineer_on_site"] and db["sla"][0]["due"] > db["opened_at"]
    assert any(p["kind"] == "dispatch" for p in db["pages"])
    _, of_quar = call(port, "GET", "/api/v1/incidents?host=quar")
    assert [i["host"] for i in of_quar] == ["quar"]
    assert any(a["event"] == "blocked" and a["decision"] == "quarantined" for a in of_quar[0]["actions"])
    status, one = call(port, "GET", f"/api/v1/incidents/{db['id']}")
    assert status == 200 and one["id"] == db["id"]
    assert any(e["event"] == "sla_started" for e in one["journal"])
    assert call(port, "GET", "/api/v1/incidents/999999") == (404, {"error": "no incident #999999"})
    assert call(port, "GET", "/api/v1/incidents?state=gone")[0] == 400
    assert call(port, "GET", "/api/v1/incidents/1x")[0] == 400


def test_explain_names_the_guard_that_blocks_each_host(live):
    daemon, port = live
    explained = {h: call(port, "GET", f"/api/v1/hosts/{h}/explain")[1]
                 for h in ("web", "db", "child", "maint", "quar", "dry")}
    assert set(verdicts(explained["web"]).values()) == {"pass"}
    assert explained["web"]["next"]["what"] == "nothing: no check of the host is confirmed down"
    assert explained["db"]["next"]["what"].startswith("level 3: an engineer is dispatched")
    assert explained["db"]["ladder"]["level"] == 3
    for host, guard in (("child", "parent_down"), ("maint", "maintenance"), ("quar", "quarantined"),
                        ("dry", "dry_run")):
        blocks = {g: v for g, v in verdicts(explained[host]).items() if v == "block"}
        assert guard in blocks, (host, explained[host]["guards"])
        assert explained[host]["ladder"]["blocked"] == guard
        assert explained[host]["next"]["what"].startswith("closed is confirmed down"), explained[host]["next"]
    # several guards at once: the quarantined host is also in a maintenance window added now
    _, window = call(port, "POST", "/api/v1/maintenance", {"target": "host:quar", "duration": "1h",
                                                          "reason": "rack work"}, token=TOKEN)
    both = call(port, "GET", "/api/v1/hosts/quar/explain")[1]
    assert both["maintenance"] == [window["id"]]
    assert {g["guard"] for g in both["guards"] if g["verdict"] == "block"} >= {"quarantined", "maintenance"}
    assert call(port, "DELETE", f"/api/v1/maintenance/{window['id']}", token=TOKEN)[0] == 200


def test_explain_has_no_side_effects(live):
    daemon, port = live
    rows = lambda: daemon.journal("quar") + daemon.journal("maint")  # noqa: E731
    before = rows()
    blocks = daemon.value("monitord_guard_blocks_total", guard="quarantined")
    for _ in range(5):
        for host in ("quar", "maint"):
            assert call(port, "GET", f"/api/v1/hosts/{host}/explain")[0] == 200
    assert rows() == before
    assert daemon.value("monitord_guard_blocks_total", guard="quarantined") == blocks


def test_maintenance_is_listed_added_with_expiry_and_removed_with_the_token(live):
    _, port = live
    window = {"target": "host:web", "duration": "2h", "reason": "kernel update", "by": "aoki"}
    assert call(port, "POST", "/api/v1/maintenance", window)[0] == 401
    assert call(port, "POST", "/api/v1/maintenance", window, token="wrong")[0] == 401
    status, added = call(port, "POST", "/api/v1/maintenance", window, token=TOKEN)
    assert status == 201 and added["hosts"] == ["web"] and added["active"] is True
    assert 7190 < added["ends"] - added["starts"] <= 7200 and added["created_by"] == "aoki"
    _, listed = call(port, "GET", "/api/v1/maintenance")
    assert {w["id"] for w in listed} == {"config:swap", added["id"]}
    assert call(port, "GET", "/api/v1/hosts/web")[1]["maintenance"] == [added["id"]]
    assert verdicts(call(port, "GET", "/api/v1/hosts/web/explain")[1])["maintenance"] == "block"
    assert call(port, "DELETE", f"/api/v1/maintenance/{added['id']}")[0] == 401
    assert call(port, "DELETE", f"/api/v1/maintenance/{added['id']}", token=TOKEN) == (
        200, {"id": added["id"], "removed": True})
    assert call(port, "DELETE", f"/api/v1/maintenance/{added['id']}", token=TOKEN)[0] == 404
    assert call(port, "GET", "/api/v1/hosts/web")[1]["maintenance"] == []
    for bad, why in (({**window, "target": "host:nosuch"}, "target must be"),
                     ({**window, "duration": "soon"}, "duration:"),
                     ({**window, "duration": "3000h"}, "at most 90 days"),
                     ({**window, "reason": " "}, "reason is required"),
                     ({**window, "extra": "x"}, "may only be")):
        status, answer = call(port, "POST", "/api/v1/maintenance", bad, token=TOKEN)
        assert status == 400 and why in answer["error"], (bad, answer)


def test_openapi_document_is_served_and_names_every_read_route(live):
    _, port = live
    status, doc = call(port, "GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/api/v1/status", "/api/v1/hosts", "/api/v1/hosts/{host}", "/api/v1/hosts/{host}/explain",
            "/api/v1/incidents", "/api/v1/incidents/{incident}", "/api/v1/incidents/{incident}/ack",
            "/api/v1/maintenance", "/api/v1/maintenance/{window}"} <= set(doc["paths"])


@pytest.mark.parametrize("reads", ["token", "off"])
def test_reads_can_need_the_token_or_be_off(tmp_path, reads):
    listener = socket.create_server(("127.0.0.1", 0))
    port = free_port()
    daemon = Daemon(tmp_path, fleet(tmp_path, port, listener.getsockname()[1], reads), port).start()
    try:
        status, answer = call(port, "GET", "/api/v1/hosts")
        assert (status, answer) == ((401, {"error": "missing or wrong bearer token"}) if reads == "token"
                                    else (403, {"error": "the read API is off (daemon.api.reads)"}))
        assert call(port, "GET", "/api/v1/hosts", token=TOKEN)[0] == (200 if reads == "token" else 403)
        # writes keep needing the token whatever the reads do
        assert call(port, "POST", "/api/v1/maintenance", {"target": "host:web", "duration": "1h",
                                                          "reason": "x"}, token=TOKEN)[0] == 201
    finally:
        listener.close()
        daemon.proc.stop(signal.SIGKILL)


def test_cli_reads_the_running_daemon(live):
    daemon, _ = live
    status = json.loads(daemon.cli("status", "--json"))
    assert status["daemon"]["hosts"] == 6  # only the daemon knows its uptime: it answered
    assert {i["host"] for i in status["open_incidents"]} == {"db", "child", "maint", "quar", "dry"}
    text = daemon.cli("status")
    assert "daemon: monitord" in text and "hosts: 6, 1 ok, 5 with failing checks; open incidents: 5" in text
    assert "\x1b[" not in text  # no colour when not on a terminal
    assert any(line.split()[:3] == ["db", "closed", "hard"] and "dispatched" in line for line in text.splitlines())
    listed = json.loads(daemon.cli("incidents", "--open", "--json"))
    assert [i["id"] for i in listed] == [i["id"] for i in status["open_incidents"]]
    assert [i["host"] for i in json.loads(daemon.cli("incidents", "--host", "web", "--json"))] == ["web"]
    table = daemon.cli("incidents").splitlines()
    assert table[0].split() == ["ID", "HOST", "CHECK", "LEVEL", "AGE", "STATE", "SUMMARY"] and len(table) == 7
    explained = daemon.cli("explain", "quar")
    assert "quar: level 0, idle, blocked by quarantined" in explained
    assert any(line.split()[:2] == ["quarantined", "BLOCK"] for line in explained.splitlines())
    assert any(line.split()[:2] == ["maintenance", "pass"] for line in explained.splitlines())
    assert json.loads(daemon.cli("explain", "db", "--json"))["ladder"]["level"] == 3


async def test_cli_reads_the_store_when_no_daemon_runs(tmp_path):
    import subprocess
    import sys

    from tests.daemon_proc import REPO

    config = fleet(tmp_path, free_port(), free_port())
    store = SQLiteStore(tmp_path / "state.db")
    now = time.time()
    await store.incidents.close(await store.incidents.open("web", "http", "tcp", now - 900, now - 900, "refused"), now - 300)
    await store.incidents.open("db", "closed", "tcp", now - 120, now - 120, "connection refused")
    await store.close()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitord", *args, "--config", str(config)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)

    listed = json.loads(cli("incidents", "--json").stdout)
    assert [(i["host"], i["open"]) for i in listed] == [("db", True), ("web", False)]
    assert [i["host"] for i in json.loads(cli("incidents", "--open", "--json").stdout)] == ["db"]
    status = cli("status")
    assert status.returncode == 0 and "daemon: not running (read from the state store)" in status.stdout
    assert "open incidents: 1" in status.stdout
    assert json.loads(cli("status", "--json").stdout)["daemon"] is None
    explained = cli("explain", "db")
    assert explained.returncode == 1 and "nothing acts on db now" in explained.stderr
    assert cli("explain", "nosuch").returncode == 2


def test_the_document_describes_exactly_the_routes_served(tmp_path):
    from aiohttp import web

    from monitord.config import parse_config
    from monitord.edge.api import Api
    from monitord.edge.metrics import Metrics
    from monitord.edge.readapi import OPENAPI, ReadApi
    from monitord.run.runner import set_up_kinds
    from monitord.shared.clock import SystemClock
    from monitord.shared.probe import ProbeContext

    store = SQLiteStore(tmp_path / "state.db")
    app = web.Application()
    config = parse_config("{}")
    api = Api(store, SystemClock(), lambda: config, actions=object())  # actions: the engine's routes
    api.install(app)
    ReadApi(api, live=None).install(app)
    ctx = ProbeContext(tmp_path)  # and the routes probe kinds add at the start (heartbeats, Alertmanager)
    asyncio.run(set_up_kinds(ctx, config, [], add_route=app.router.add_post, store=store, clock=SystemClock(),
                             running=lambda: config, metrics=Metrics(), run_soon=lambda check_id: None))
    asyncio.run(ctx.aclose())
    served = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()}
    documented = {(method, path) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert served == documented
    asyncio.run(store.close())


async def test_the_fleet_view_reads_the_store_once_and_shows_what_each_host_view_shows(tmp_path):
    """``/api/v1/hosts`` and the status page read check states, escalations, quarantines and
    windows once for the whole fleet (they were read per host: quadratic), and every host
    looks as its own ``/api/v1/hosts/NAME`` shows it: states, a stored window beside a config
    one, a quarantine."""
    from monitord.config import load_config
    from monitord.edge import views
    from monitord.run.checkstate import CheckState
    from monitord.shared.results import Status

    config = load_config(fleet(tmp_path, free_port(), free_port()))
    store = SQLiteStore(tmp_path / "state.db")
    now = time.time()
    store.checks.stage("db/closed", CheckState(status=Status.CRITICAL, last_run=now - 5), 7)
    store.checks.stage("web/http", CheckState(last_run=now - 3), None)
    await store.checks.flush()
    await store.control.quarantine("quar", now - 60, "compromised", "aoki")
    await store.control.add_maintenance("host:child", now - 10, now + 600, "cabling", "aoki")
    await store.control.add_maintenance("host:web", now + 600, now + 1200, "later", "aoki")  # not active yet
    due = {"web/http": now + 30}
    reads = []
    for part, method in ((store.checks, "states"), (store.control, "quarantined"), (store.control, "maintenance")):
        real = getattr(part, method)

        async def counted(*args, real=real, method=method):
            reads.append(method)
            return await real(*args)

        setattr(part, method, counted)
    try:
        fleet_view = await views.hosts(config, store, now, due)
        assert sorted(reads) == ["maintenance", "quarantined", "states"]
        assert fleet_view == [await views.host(config, store, name, now, due) for name in config.hosts]
        by_name = {h["name"]: h for h in fleet_view}
        assert [(c["name"], c["state"], c["incident"]) for c in by_name["db"]["checks"]] == [("closed", "hard", 7)]
        assert by_name["web"]["checks"][0]["next_run"] == now + 30 and by_name["web"]["maintenance"] == []
        assert by_name["maint"]["maintenance"] == ["config:swap"] and len(by_name["child"]["maintenance"]) == 1
        assert by_name["quar"]["quarantined"] == {"since": now - 60, "reason": "compromised"}
        assert by_name["child"]["checks"][0]["state"] == "unknown"
    finally:
        await store.close()
