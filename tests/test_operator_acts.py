"""The operator's acts (approve, deny, maintenance add and remove) through the running daemon's
API, and without a daemon on the store directly: the engine's approval wait woken at once by
an answer through the API (fake clock), the API routes, and the CLI against a real daemon."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitord.config import parse_config
from monitord.edge import acts
from monitord.edge.api import Api
from monitord.escalation import actions as actions_module
from monitord.escalation.ladder import Answer, Phase, Step
from monitord.records.state import SQLiteStore
from tests.daemon_proc import REPO, Daemon
from tests.support import free_port, unit_engine

NOW = 1_800_000_000.0
TOKEN = "acts-t0ken"
CONFIG = """
groups: {web: {}}
hosts:
  web1: {address: 127.0.0.1, groups: [web], tags: [gold], checks: {ping: {}}}
"""


async def engine_on(tmp_path):
    store = SQLiteStore(tmp_path / "state.db")
    return await unit_engine(store, parse_config(CONFIG), None, None), store


async def test_an_answer_through_the_api_wakes_the_waiting_ladder_at_once(tmp_path):
    engine, store = await engine_on(tmp_path)
    waiting = asyncio.create_task(engine.actions.answer("web1", NOW + 900))  # noqa: SLF001 - the ladder's wait
    await engine.clock.settle()
    assert not waiting.done()
    await acts.answer_approval(store, "web1", "denied", "night-contact", NOW)
    engine.answered("web1")
    await engine.clock.settle()
    done = waiting.result()  # the clock did not move: no poll was needed
    assert (done.step, done.ok, done.detail) == (Step.REQUEST_APPROVAL, False, Answer("denied"))
    assert engine.clock.time() == NOW
    await store.close()


async def test_an_answer_written_to_the_store_is_read_at_the_next_look(tmp_path):
    engine, store = await engine_on(tmp_path)  # the CLI without the API token writes to the store only
    waiting = asyncio.create_task(engine.actions.answer("web1", NOW + 900))  # noqa: SLF001
    await engine.clock.settle()
    engine.answered("db9")  # another host's answer does not end this wait
    await acts.answer_approval(store, "web1", "granted", "night-contact", NOW)
    await engine.clock.settle()
    assert not waiting.done()
    await engine.clock.advance(actions_module.APPROVAL_POLL)
    assert waiting.result().ok and waiting.result().detail == Answer("granted")
    await store.close()


async def test_without_an_answer_the_wait_times_out(tmp_path):
    engine, store = await engine_on(tmp_path)
    engine.answered("web1")  # an answer signalled before anyone waits is not an answer
    waiting = asyncio.create_task(engine.actions.answer("web1", NOW + 10))  # noqa: SLF001
    await engine.clock.settle()
    assert not waiting.done()
    await engine.clock.advance(10)
    done = waiting.result()
    assert (done.ok, done.reason, done.detail) == (False, "timeout", Answer(None))
    await store.close()


async def test_the_api_records_answers_and_windows(tmp_path):
    engine, store = await engine_on(tmp_path)
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = parse_config(CONFIG + f"daemon: {{api_token: {{file: {tmp_path / 'token'}}}}}\n")
    incident = await store.incidents.open("web1", "ping", "ping", NOW - 60, NOW - 60, "down")
    await store.checks.put_escalation("web1", {"phase": Phase.AWAITING_APPROVAL.value, "incident_id": incident})
    app = web.Application()
    api = Api(store, engine.clock, lambda: config, engine)
    api.install(app)
    from monitord.edge.readapi import ReadApi

    ReadApi(api, live=None).install(app)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        async def call(method, path, body=None, token=TOKEN):
            async with http.request(method, server.make_url(path), data=None if body is None else json.dumps(body),
                                    headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, await r.json()

        assert (await call("POST", "/api/v1/hosts/web1/approve", token="wrong"))[0] == 401
        assert await call("POST", "/api/v1/hosts/db9/deny") == (404, {"error": "no such host in the running config"})
        assert (await call("POST", "/api/v1/hosts/web1/approve", {"by": 1}))[0] == 400
        assert await store.incidents.journal() == []  # nothing refused wrote anything
        assert await call("POST", "/api/v1/hosts/web1/approve", {"by": "aoki"}) == (
            200, {"host": "web1", "answer": "granted", "awaiting": True})
        assert engine._answers["web1"].is_set()  # noqa: SLF001 - the waiting ladder is told
        await store.checks.put_escalation("web1", {"phase": Phase.IDLE.value})
        assert await call("POST", "/api/v1/hosts/web1/deny", {}) == (
            200, {"host": "web1", "answer": "denied", "awaiting": False})
        assert await store.control.take_approval("web1", 0) == "denied"  # the newest answer counts

        status, window = await call("POST", "/api/v1/maintenance", {
            "target": "tag:gold", "duration": "1h", "reason": "rack move", "start": "2027-02-01T02:00+09:00"})
        assert status == 201 and not window["active"] and window["hosts"] == ["web1"]
        assert window["ends"] - window["starts"] == 3600 and window["created_by"] == "api"
        for start in ("tomorrow", "2027-02-01T02:00"):  # no offset: whose 02:00?
            status, answer = await call("POST", "/api/v1/maintenance", {
                "target": "host:web1", "duration": "1h", "reason": "x", "start": start})
            assert status == 400 and "UTC offset" in answer["error"]
        assert await call("DELETE", f"/api/v1/maintenance/{window['id']}") == (
            200, {"id": window["id"], "removed": True})
    journal = [(e.event, e.decision, e.host, e.incident_id, e.detail.get("by")) for e in await store.incidents.journal()]
    assert journal[:2] == [("approval", "granted", "web1", incident, "aoki"),
                           ("approval", "denied", "web1", incident, "api")]
    assert [(e, d) for e, d, *_ in journal[2:]] == [("maintenance", "added"), ("maintenance", "removed")]
    await store.close()


async def test_a_window_added_by_hand_has_the_same_rules_either_way(tmp_path):
    config = parse_config(CONFIG)
    store = SQLiteStore(tmp_path / "state.db")
    for target, length, reason, why in (("host:db9", 60, "x", "no host 'db9'"), ("rack:1", 60, "x", "target must be"),
                                        ("host:web1", 0, "x", "more than 0"),
                                        ("host:web1", 91 * 86400, "x", "at most 90 days"),
                                        ("host:web1", 60, " ", "reason is required")):
        with pytest.raises(ValueError, match=why):
            await acts.add_window(config, store, target, NOW, length, reason, None, NOW)
    assert await store.control.maintenance() == [] and await store.incidents.journal() == []
    with pytest.raises(ValueError, match="answer must be granted or denied"):
        await acts.answer_approval(store, "web1", "maybe", None, NOW)
    await store.close()


# -- the CLI against a real running daemon ---------------------------------------------------------


@pytest.fixture
def daemon(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))  # web1 answers on TCP
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    config = {
        "daemon": {"state_path": str(tmp_path / "state.db"), "metrics_listen": f"127.0.0.1:{port}",
                   "api_token": {"file": str(tmp_path / "token")}},
        "groups": {"web": {}},
        "hosts": {"web1": {"address": "127.0.0.1", "groups": ["web"],
                           "checks": {"http": {"kind": "tcp", "port": listener.getsockname()[1]}}}},
    }
    (tmp_path / "monitord.yaml").write_text(json.dumps(config))
    running = Daemon(tmp_path, tmp_path / "monitord.yaml", port).start()
    yield running
    running.proc.stop()
    listener.close()


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitord", *args, "--config", str(daemon.config)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "TZ": "UTC"},
                          timeout=120)


@pytest.mark.integration
def test_the_cli_acts_through_the_running_daemon(daemon):
    approve = cli(daemon, "approve", "web1", "--by", "night-contact")
    assert approve.returncode == 0, approve.stderr
    assert approve.stdout == "web1: granted (the running daemon goes on at once)\n"
    assert "no action on web1 is waiting for an answer now" in approve.stderr
    deny = cli(daemon, "deny", "web1")
    assert deny.returncode == 0 and deny.stdout == "web1: denied (the running daemon goes on at once)\n"
    added = cli(daemon, "maintenance", "add", "--group", "web", "--duration", "2h", "--reason", "kernel update",
                "--start", "2027-02-01T02:00+09:00", "--by", "ops")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "maintenance #1: group web until 2027-01-31T19:00:00+00:00 (added by the running daemon)\n"
    refused = cli(daemon, "maintenance", "add", "--host", "web1", "--duration", "100d", "--reason", "typo")
    assert refused.returncode == 1 and "the daemon refused: duration must be more than 0 and at most 90 days" \
        in refused.stderr
    listed = cli(daemon, "maintenance", "list")
    assert "group:web" in listed.stdout and "planned" in listed.stdout and "kernel update (ops)" in listed.stdout
    assert cli(daemon, "maintenance", "remove", "1").stdout == "maintenance #1 removed\n"
    gone = cli(daemon, "maintenance", "remove", "1")
    assert gone.returncode == 2 and "no maintenance window #1" in gone.stderr
    rows = [(event, decision) for event, decision, *_ in daemon.journal("web1") if event != "daemon"]
    assert rows == [("approval", "granted"), ("approval", "denied")]
    assert [r[:2] for r in daemon.journal() if r[0] == "maintenance"] == [("maintenance", "added"),
                                                                        ("maintenance", "removed")]
    log = (daemon.tmp / "daemon.log").read_text()
    assert TOKEN not in log and "Traceback" not in log


@pytest.mark.integration
def test_without_the_daemon_the_cli_acts_on_the_store(daemon):
    daemon.proc.stop()
    deny = cli(daemon, "deny", "web1", "--by", "night-contact")
    assert deny.returncode == 0 and deny.stdout == "web1: denied\n" and deny.stderr == ""
    added = cli(daemon, "maintenance", "add", "--host", "web1", "--duration", "1h", "--reason", "disk swap")
    assert added.returncode == 0 and added.stdout.startswith("maintenance #1: host web1 until ")
    assert "running daemon" not in added.stdout
    too_long = cli(daemon, "maintenance", "add", "--host", "web1", "--duration", "100d", "--reason", "typo")
    assert too_long.returncode == 2 and "at most 90 days" in too_long.stderr  # the API's rule, here too
    assert cli(daemon, "maintenance", "remove", "1").stdout == "maintenance #1 removed\n"
    store = SQLiteStore(daemon.state)
    try:
        assert asyncio.run(store.control.take_approval("web1", 0)) == "denied" and asyncio.run(store.control.maintenance()) == []
    finally:
        asyncio.run(store.close())
