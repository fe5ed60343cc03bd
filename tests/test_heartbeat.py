"""The ``heartbeat`` kind: body parsing and verdicts on a fake clock, then the daemon as a process
receiving heartbeats over HTTP (tokens, bad bodies, silence, restarts)."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from monitord.config import Config, parse_config
from monitord.shared.results import Reason, Status
from monitord.records.state import Heartbeat, SQLiteStore
from probes import heartbeat
from monitord.shared.probe import ProbeCall, ProbeContext
from probes.heartbeat import HeartbeatParams, Receiver, parse_body
from tests.daemon_proc import Daemon, wait_for
from tests.fakeclock import FakeClock
from tests.support import free_port

TOKEN = "c0rrect-h0rse"

# ---------------------------------------------------------------------------------------
# Request bodies


@pytest.mark.parametrize("raw,expected", [
    (b"", Heartbeat(5.0)),
    (b"  \n", Heartbeat(5.0)),
    (b"{}", Heartbeat(5.0)),
    (b'{"status": "ok", "message": "backup done"}', Heartbeat(5.0, Status.OK, "backup done")),
    (b'{"status": "CRITICAL", "message": "disk\\nfull"}', Heartbeat(5.0, Status.CRITICAL, "disk full")),
    (b'{"status": 1}', Heartbeat(5.0, Status.WARNING)),
])
def test_good_bodies(raw, expected):
    assert parse_body(raw, 5.0) == expected


@pytest.mark.parametrize("raw,why", [
    (b"ok", "body is not JSON"),
    (b"\xff\xfe{", "body is not JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'{"status": "fine"}', "status must be one of ok, warning, critical, unknown (or 0-3)"),
    (b'{"status": 4}', "status must be one of"),
    (b'{"status": true}', "status must be one of"),
    (b'{"message": 5}', "message must be a string"),
    (b'{"state": "ok", "msg": "x"}', "unknown key(s) msg, state: only status and message are known"),
    (b"[" * 4000, "body is not JSON: nested too deeply"),
    (b'{"a": [' * 600, "body is not JSON: nested too deeply"),
])
def test_bad_bodies(raw, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_body(raw, 5.0)


# ---------------------------------------------------------------------------------------
# Verdicts, on a fake clock

CONFIG = """
hosts:
  web1:
    address: 127.0.0.1
    checks:
      heartbeat: {token: {env: HB_TOKEN}, expect_every: 10m}
"""


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG)


@pytest.fixture
async def store(tmp_path):
    store = SQLiteStore(tmp_path / "state.db")
    yield store
    await store.close()


def params_of(config: Config) -> HeartbeatParams:
    return config.hosts["web1"].checks["heartbeat"]


async def test_silence_longer_than_missed_intervals_is_critical(config, store):
    clock = FakeClock()
    receiver = await Receiver.open(store, clock, lambda: config)
    params = params_of(config)
    assert params.limit == 1800
    first = receiver.judge("web1", params)
    assert (first.status, first.summary) == (Status.OK, "no heartbeat yet; waiting up to 30m (expected every 10m)")
    await clock.advance(1800)
    never = receiver.judge("web1", params)
    assert (never.status, never.reason) == (Status.CRITICAL, Reason.TIMEOUT)
    assert never.summary == "no heartbeat since monitoring began 30m ago (expected every 10m)"
    await receiver.record("web1", Heartbeat(clock.time()))
    await clock.advance(90)
    ok = receiver.judge("web1", params)
    assert (ok.status, ok.summary, ok.values) == (Status.OK, "heartbeat 1m30s ago", {"seconds_since_heartbeat": 90})
    await clock.advance(1770)
    late = receiver.judge("web1", params)
    assert (late.status, late.reason) == (Status.CRITICAL, Reason.TIMEOUT)
    assert late.summary == "no heartbeat for 31m (expected every 10m)"


async def test_a_fresh_heartbeat_reporting_a_problem_gives_its_status(config, store):
    clock = FakeClock()
    receiver = await Receiver.open(store, clock, lambda: config)
    await receiver.record("web1", Heartbeat(clock.time(), Status.CRITICAL, "RAID degraded"))
    outcome = receiver.judge("web1", params_of(config))
    assert (outcome.status, outcome.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    assert outcome.summary == "heartbeat under 1s ago reports critical: RAID degraded"


async def test_last_heartbeats_survive_a_restart_without_blaming_the_downtime(config, store):
    clock = FakeClock()
    await (await Receiver.open(store, clock, lambda: config)).record("web1", Heartbeat(clock.time(), Status.OK, "alive"))
    await clock.advance(3600)  # the daemon was down for an hour
    restarted = await Receiver.open(store, clock, lambda: config)
    assert restarted.last("web1") == Heartbeat(clock.time() - 3600, Status.OK, "alive")
    grace = restarted.judge("web1", params_of(config))
    assert grace.status is Status.OK
    assert grace.summary == "last heartbeat 1h ago, before this daemon started; waiting up to 30m"
    await clock.advance(1800)
    silent = restarted.judge("web1", params_of(config))
    assert (silent.status, silent.summary) == (Status.CRITICAL, "no heartbeat for 1h30m (expected every 10m)")


async def test_without_a_receiver_the_probe_is_unknown(config):
    ctx = ProbeContext()
    outcome = await heartbeat.run(ctx, ProbeCall("web1", "127.0.0.1", 5.0), params_of(config))
    assert (outcome.status, outcome.reason) == (Status.UNKNOWN, Reason.ERROR)
    await ctx.aclose()


# ---------------------------------------------------------------------------------------
# The daemon as a process

def post(port: int, host: str, body: bytes = b"", token: str | None = TOKEN, scheme: str = "Bearer") -> tuple[int, dict]:
    """POST a heartbeat; return the HTTP status and the JSON error (empty on success)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/heartbeat/{host}", data=body, method="POST")
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def stored_heartbeats(state: Path) -> dict[str, tuple]:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return {row[0]: row[1:] for row in db.execute("SELECT host, status, message FROM heartbeats")}
    finally:
        db.close()


def since_heartbeat(daemon: Daemon, host: str) -> float | None:
    """The host's ``seconds_since_heartbeat`` value (the check's only value)."""
    return daemon.value("monitord_probe_value", host=host, check="heartbeat")


@pytest.fixture
def hb_daemon(tmp_path):
    """A daemon with heartbeat checks for web1 and db1 (1 s expected, 2 missed) and a tcp-only host."""
    (tmp_path / "web1.token").write_text(TOKEN + "\n")
    (tmp_path / "db1.token").write_text("another-token\n")
    port = free_port()
    config = tmp_path / "monitord.yaml"
    config.write_text(f"""
daemon:
  state_path: {tmp_path / "state.db"}
  metrics_listen: 127.0.0.1:{port}
defaults:
  intervals: {{heartbeat: 300ms, tcp: 10s}}
  retry_interval: 300ms
  max_attempts: 2
  timeout: 200ms
hosts:
  web1:
    address: 127.0.0.1
    checks:
      heartbeat: {{token: {{file: web1.token}}, expect_every: 1s, missed: 2}}
  db1:
    address: 127.0.0.1
    checks:
      heartbeat: {{token: {{file: db1.token}}, expect_every: 1s, missed: 2}}
  plain:
    address: 127.0.0.1
    checks:
      tcp: {{port: {free_port()}}}
""")
    daemon = Daemon(tmp_path, config, port)
    yield daemon
    if daemon.proc:
        daemon.proc.stop(signal.SIGKILL)


class Agent:
    """Posts a heartbeat every 300 ms in a thread until stopped."""

    def __init__(self, port: int, host: str, token: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port, host, token), daemon=True)
        self._thread.start()

    def _run(self, port: int, host: str, token: str) -> None:
        while not self._stop.is_set():
            post(port, host, b'{"status": "ok", "message": "agent alive"}', token)
            self._stop.wait(0.3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.integration
def test_heartbeats_keep_a_check_ok_and_silence_makes_it_critical(hb_daemon):
    daemon = hb_daemon.start()
    agent = Agent(daemon.port, "web1", TOKEN)
    try:
        wait_for(lambda: daemon.value("monitord_check_state", host="db1") == 2, 20, "silent db1 confirmed down")
        assert daemon.value("monitord_probe_success", host="web1", check="heartbeat", kind="heartbeat") == 1
        assert daemon.value("monitord_check_state", host="web1") == 0
        assert since_heartbeat(daemon, "web1") < 1
        assert daemon.value("monitord_probe_results_total", kind="heartbeat", status="critical", reason="timeout") >= 2
    finally:
        agent.stop()
    wait_for(lambda: daemon.value("monitord_check_state", host="web1") == 2, 20, "web1 down once the agent stops")
    assert since_heartbeat(daemon, "web1") >= 2
    # db1's own token brings it back
    assert post(daemon.port, "db1", token="another-token") == (204, {})
    wait_for(lambda: daemon.value("monitord_check_state", host="db1") == 0, 20, "db1 recovered")
    assert "recovered ok" in daemon.events("db1")


@pytest.mark.integration
async def test_tokens_bodies_and_unknown_hosts_are_refused_without_effect(hb_daemon):
    daemon = hb_daemon.start()
    port = daemon.port
    # an unknown host, a host without a heartbeat check and a known host without its token get one
    # answer (this was 404 for the first two: clients without a token could enumerate the hosts)
    for host in ("nohost", "plain"):
        code, error = post(port, host)
        assert (code, error) == (401, {"error": "missing or wrong bearer token"}), host
    for token, scheme in (("wrong", "Bearer"), (None, "Bearer"), (TOKEN, "Basic"), ("another-token", "Bearer"), ("", "Bearer")):
        code, error = post(port, "web1", token=token, scheme=scheme)
        assert (code, error) == (401, {"error": "missing or wrong bearer token"}), (token, scheme)
    code, error = post(port, "web1", b"{not json")
    assert code == 400 and error["error"].startswith("body is not JSON")
    code, error = post(port, "web1", b'{"status": "fine"}')
    assert (code, error["error"]) == (400, "status must be one of ok, warning, critical, unknown (or 0-3)")
    code, error = post(port, "web1", b"x" * 5000)
    assert (code, error["error"]) == (400, "body larger than 4096 bytes")
    assert stored_heartbeats(daemon.state) == {}  # nothing refused was recorded

    assert post(port, "web1", b'{"status": "warning", "message": "backup slow"}') == (204, {})
    assert stored_heartbeats(daemon.state) == {"web1": (1, "backup slow")}
    wait_for(lambda: daemon.value("monitord_probe_status", host="web1") == 1, 10, "the reported warning")
    assert daemon.value("monitord_probe_results_total", kind="heartbeat", status="warning", reason="threshold") >= 1


@pytest.mark.integration
async def test_the_last_heartbeat_survives_a_restart(hb_daemon):
    daemon = hb_daemon.start()
    assert post(daemon.port, "web1") == (204, {})
    daemon.proc.stop(signal.SIGTERM)
    assert stored_heartbeats(daemon.state) == {"web1": (0, "")}
    daemon.start()
    # the persisted heartbeat is judged at once, with its true age, and the restart gives a grace
    wait_for(lambda: since_heartbeat(daemon, "web1"), 10,
             "web1 judged after the restart")
    assert daemon.value("monitord_probe_success", host="web1") == 1
    assert "Traceback" not in daemon.proc.output()
