"""State store faults: a full disk at start-up and at run time, one daemon per store.

Unit tests drive the engine on the fake clock against a real store whose writes really fail
(``PRAGMA query_only``, SQLite's own read-only mode); integration tests run real daemon
processes, on a small tmpfs that really fills up.
"""

from __future__ import annotations

import asyncio
import errno
import http.server
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from monitord.run.checkstate import CheckState, Event
from monitord.config import parse_config
from monitord.shared.results import Reason, Result, Status
from monitord.records.state import Heartbeat, JournalEntry, SQLiteStore, StoreFault
from monitord.shared.power import ActionError
from remediation.pagers import Message
from tests.daemon_proc import REPO, Daemon, wait_for
from tests.fakeclock import FakeClock
from tests.test_daemon import write_config as daemon_config
from tests.support import free_port, need_binary, need_root, unit_engine

CONFIG = """
hosts:
  web1:
    address: 127.0.0.1
    ssh: {username: monitord, key: {env: NOPE}, known_hosts: /dev/null}
    checks:
      nginx: {kind: tcp, port: 80, restart: {unit: nginx, grace: 1s}}
"""
DOWN = Result(Status.CRITICAL, Reason.REFUSED, "connection refused", 0.01, 1_800_000_000.0)
UP = Result(Status.OK, Reason.NONE, "open", 0.01, 1_800_000_000.0)


class Checks:
    """The scheduler as the engine sees it: current states, and re-probes that return ``now``."""

    def __init__(self, spec, state: CheckState, now: Result):
        self.spec, self.state, self.now = spec, state, now

    def state_of(self, check_id):
        return self.state

    def incident_of(self, check_id):
        return 7

    def run_soon(self, check_id):
        pass

    async def run_now(self, check_id):
        return self.now


class SshClient:
    """Records each login (the first step of a restart); ``during`` runs inside the action."""

    def __init__(self, logins: list, during):
        self.logins, self.during = logins, during

    async def login_check(self):
        self.logins.append("login")
        await self.during()
        raise ActionError(Reason.AUTH, "permission denied (publickey)")


class Drivers:
    def __init__(self, during=None):
        self.logins: list[str] = []
        during = during or (lambda: asyncio.sleep(0))
        self.during = during

    def ssh(self, address, ssh):
        return SshClient(self.logins, self.during)


class Faulty:
    """A store of one backend, and how to make its writes fail and work again: SQLite read-only
    (as a full disk), PostgreSQL read-only (as a standby after a failover: its connections
    dropped, new ones read-only). Reads work in both, so a test can see nothing was written."""

    def __init__(self, store, server=None):
        self.store, self.server = store, server
        self.reason = "attempt to write a readonly database" if server is None else "terminating connection"

    async def breaks(self) -> None:
        if self.server is None:
            return await break_store(self.store)
        from tests.db_peers import USER, postgres_sql

        postgres_sql(self.server, f"ALTER ROLE {USER} SET default_transaction_read_only = on")
        postgres_sql(self.server, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename='{USER}'")
        with pytest.raises(StoreFault, match="write failed"):
            await self.store.incidents.append(JournalEntry(ts=0.0, event="note"))

    async def mends(self) -> None:
        if self.server is None:
            return await mend_store(self.store)
        from tests.db_peers import USER, postgres_sql

        postgres_sql(self.server, f"ALTER ROLE {USER} RESET default_transaction_read_only")
        assert await self.store.probe() is None and self.store.fault is None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def faulty(request, tmp_path):
    if request.param == "sqlite":
        backend = Faulty(SQLiteStore(tmp_path / "state.db"))
    else:
        from monitord.records.postgres import PostgresStore

        backend = Faulty(await PostgresStore.connect(request.getfixturevalue("postgres_dsn")),
                         request.getfixturevalue("postgres_server"))
    yield backend
    if backend.server is not None:
        from tests.db_peers import USER, postgres_sql

        postgres_sql(backend.server, f"ALTER ROLE {USER} RESET default_transaction_read_only")
    await backend.store.close()


async def make(faulty: Faulty, drivers: Drivers):
    store = faulty.store
    config = parse_config(CONFIG)
    [spec] = config.checks()
    checks = Checks(spec, CheckState(status=Status.CRITICAL, hard=True, attempt=3, last_result=DOWN), DOWN)
    return await unit_engine(store, config, checks, drivers), store, spec, checks


async def break_store(store: SQLiteStore) -> None:
    """Make every write fail, as a full disk does, and let the store notice."""
    store._db.execute("PRAGMA query_only=1")
    with pytest.raises(StoreFault, match="write failed: attempt to write a readonly database"):
        await store.incidents.append(JournalEntry(ts=0.0, event="note"))


async def mend_store(store: SQLiteStore) -> None:
    store._db.execute("PRAGMA query_only=0")
    assert await store.probe() is None and store.fault is None


async def journal(store: SQLiteStore) -> list[str]:
    return [" ".join(x for x in (e.event, e.decision, e.outcome) if x) for e in await store.incidents.journal()]


async def confirmed_while_broken(faulty: Faulty, drivers: Drivers):
    """An engine whose store cannot be written, told that the service is confirmed down."""
    engine, store, spec, checks = await make(faulty, drivers)
    await faulty.breaks()
    await engine.notify(spec, Event.CONFIRMED, DOWN, 7)
    await asyncio.sleep(0)
    await engine.idle()
    return engine, store, checks


async def test_unwritable_store_holds_every_action_then_the_ladder_resumes(faulty, caplog):
    drivers = Drivers()
    engine, store, _ = await confirmed_while_broken(faulty, drivers)
    assert drivers.logins == []  # no restart: it could not be journaled first
    assert await journal(store) == []
    engine._reevaluate()  # the periodic re-evaluation is held too
    await engine.idle()
    assert drivers.logins == [] and await journal(store) == []
    assert caplog.text.count("every automatic action is held") == 1  # however many writes failed
    assert faulty.reason in store.fault

    await faulty.mends()
    assert "writable again; automatic actions resume" in caplog.text
    await engine.store_recovered()
    await engine.idle()
    assert drivers.logins == ["login"]  # decided (journaled), then done, once
    assert (await journal(store))[:2] == ["decided service_restart", "outcome service_restart failed"]


async def test_a_check_that_recovered_meanwhile_starts_nothing(faulty):
    drivers = Drivers()
    engine, store, checks = await confirmed_while_broken(faulty, drivers)
    checks.state, checks.now = CheckState(), UP  # back by itself while nothing could be written
    await faulty.mends()
    await engine.store_recovered()
    await engine.idle()
    assert drivers.logins == [] and await journal(store) == []


async def test_a_fault_during_an_action_is_reconciled_never_redone(faulty):
    engine, store, spec, checks = await make(faulty, None)
    engine.drivers = engine.actions.drivers = drivers = Drivers(during=faulty.breaks)  # the disk fills during the restart
    await engine.notify(spec, Event.CONFIRMED, DOWN, 7)
    await asyncio.sleep(0)
    await engine.idle()
    assert drivers.logins == ["login"]
    assert await journal(store) == ["decided service_restart"]  # its outcome could not be written
    assert str(engine.state("web1").phase) == "acting"
    checks.now = UP
    await faulty.mends()
    await engine.store_recovered()
    await engine.idle()
    assert drivers.logins == ["login"]  # re-probed, not restarted again
    assert (await journal(store))[1:] == ["reconciled service_restart ok", "resolved"]
    assert str(engine.state("web1").phase) == "idle"


async def test_the_outbox_waits_while_a_delivery_could_not_be_recorded(tmp_path):
    from tests.test_pagers import ScriptedPager, make as make_dispatcher

    store, clock, pager = SQLiteStore(tmp_path / "state.db"), FakeClock(), ScriptedPager()
    outbox, dispatcher, _ = make_dispatcher(store, clock, {"ops": pager})
    await outbox.enqueue("ops", Message(dedup_key="incident-1", summary="web1 down", source="web1"))
    await break_store(store)
    for _ in range(3):  # each pass would send it again, since "delivered" cannot be written
        assert await dispatcher.deliver_due() == 0
    assert pager.calls == 0
    await mend_store(store)
    assert await dispatcher.deliver_due() == 1 and pager.calls == 1
    assert [item.state for item in await store.outbox.items()] == ["delivered"]


async def test_the_outbox_loop_sleeps_while_the_store_is_unwritable(tmp_path):
    from tests.test_pagers import ScriptedPager, make as make_dispatcher

    store, clock, pager = SQLiteStore(tmp_path / "state.db"), FakeClock(), ScriptedPager()
    outbox, dispatcher, _ = make_dispatcher(store, clock, {"ops": pager})
    await outbox.enqueue("ops", Message(dedup_key="incident-1", summary="web1 down", source="web1"))
    await break_store(store)
    passes = 0
    deliver_due = dispatcher.deliver_due

    async def counted(everything: bool = False) -> int:
        nonlocal passes
        passes += 1
        if passes > 100:  # a loop that never sleeps would freeze the daemon: end it here instead
            raise RuntimeError("spinning")
        return await deliver_due(everything)

    dispatcher.deliver_due = counted
    task = asyncio.create_task(dispatcher.run())
    await clock.advance(30)
    assert passes <= 30 / 5 + 2 and pager.calls == 0
    await mend_store(store)
    await clock.advance(5)
    assert pager.calls == 1 and [item.state for item in await store.outbox.items()] == ["delivered"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_heartbeats_are_taken_from_memory_while_the_store_is_unwritable(tmp_path, caplog):
    from probes.heartbeat import Receiver

    store, clock = SQLiteStore(tmp_path / "state.db"), FakeClock()
    receiver = await Receiver.open(store, clock, lambda: parse_config(CONFIG))
    await break_store(store)
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            await receiver.record("web1", Heartbeat(clock.time() + i))
    assert receiver.last("web1").at == clock.time() + 4
    assert "Traceback" not in caplog.text and "could not store" not in caplog.text
    await mend_store(store)
    await receiver.record("web1", Heartbeat(clock.time() + 9))
    assert (await store.checks.heartbeats())["web1"].at == clock.time() + 9


# -- real daemons ---------------------------------------------------------------------------


def write_config(path: Path, state: Path, metrics_port: int, closed_port: int, hook_port: int | None = None) -> Path:
    """test_daemon's config with one closed port and, with ``hook_port``, a webhook that gets every page."""
    daemon_config(path, state, metrics_port, f"      closed: {{kind: tcp, port: {closed_port}}}\n")
    if hook_port is not None:
        (path.parent / "hook.key").write_text("hook-secret\n")
        path.write_text(path.read_text() + f"""
paging:
  integrations:
    hook: {{type: webhook, url: "http://127.0.0.1:{hook_port}/page", secret: {{file: {path.parent / 'hook.key'}}}}}
  policies: {{ops: {{tiers: [{{targets: [hook]}}]}}}}
  routes: [{{policy: ops}}]
""")
    return path


def monitord(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitord", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout)


def started(state: Path) -> int:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM journal WHERE event='daemon' AND decision='started'").fetchone()[0]
    finally:
        db.close()


@pytest.mark.integration
def test_a_second_daemon_on_the_same_store_refuses_to_start(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "monitord.yaml", tmp_path / "state.db", port, free_port())
    first = Daemon(tmp_path, config, port).start()
    try:
        # same store through another config file (another metrics port): still one store, one daemon
        other = write_config(tmp_path / "other.yaml", tmp_path / "state.db", free_port(), free_port())
        second = monitord("run", "--config", str(other))
        assert second.returncode == 4, second.stderr
        assert f"another monitord (pid {first.proc.pid}) is running on this state store" in second.stderr
        assert str(tmp_path / "state.db") in second.stderr and "Traceback" not in second.stderr
        assert first.alive() and started(tmp_path / "state.db") == 1
        # the CLI's verbs share the store with the running daemon (SQLite's locking)
        assert "maintenance #1" in first.cli("maintenance", "add", "--host", "local", "--duration", "1h",
                                             "--reason", "disk swap")
        assert "disk swap" in first.cli("journal")
        # kill -9 releases the lock with the process: a restart works
        first.proc.stop(signal.SIGKILL)
        first.start()
        assert started(tmp_path / "state.db") == 2
    finally:
        first.proc.stop(signal.SIGKILL)


def on_postgres(config: Path, dsn: str) -> Path:
    """``config`` with its state on PostgreSQL at ``dsn`` (a secret in a file beside it)."""
    dsn_file = config.parent / "store.dsn"
    dsn_file.write_text(dsn + "\n")
    dsn_file.chmod(0o600)
    config.write_text(config.read_text().replace(
        "daemon:\n", f"daemon:\n  store: {{kind: postgres, dsn: {{file: {dsn_file}}}}}\n", 1))
    return config


def pg_started(dsn: str) -> int:
    """How many starts the journal on PostgreSQL holds."""
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT count(*) FROM journal WHERE event='daemon' AND decision='started'")
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.mark.integration
def test_a_daemon_on_postgres_is_alone_on_it_shares_it_with_the_cli_and_holds_on_while_it_is_lost(
        tmp_path, postgres_dsn, postgres_server):
    import socket

    from tests.db_peers import PASSWORD, USER, postgres_sql

    port = free_port()
    config = on_postgres(write_config(tmp_path / "monitord.yaml", tmp_path / "state.db", port, free_port()),
                         postgres_dsn)
    first = Daemon(tmp_path, config, port).start()
    try:
        wait_for(lambda: pg_started(postgres_dsn) == 1, 20, "the start journaled on PostgreSQL")
        assert not (tmp_path / "state.db").exists()  # nothing went to SQLite
        other = on_postgres(write_config(tmp_path / "other.yaml", tmp_path / "other.db", free_port(), free_port()),
                            postgres_dsn)
        second = monitord("run", "--config", str(other))
        assert second.returncode == 4, second.stderr
        assert (f"another monitord ('monitord {socket.gethostname()} pid {first.proc.pid}') is running on this state "
                "store") in second.stderr
        assert PASSWORD not in second.stderr and "Traceback" not in second.stderr and first.alive()
        # the CLI's verbs work on the PostgreSQL store beside the daemon
        assert "maintenance #1" in first.cli("maintenance", "add", "--host", "local", "--duration", "1h",
                                             "--reason", "disk swap")
        assert "disk swap" in first.cli("journal") and "disk swap" in first.cli("maintenance", "list")
        # every connection is lost (the lock's too, as in a PostgreSQL restart) and cannot be
        # opened again: a store fault; then recovery, with the lock taken again
        postgres_sql(postgres_server, f"ALTER ROLE {USER} NOLOGIN; SELECT pg_terminate_backend(pid) FROM "
                     f"pg_stat_activity WHERE usename='{USER}'")
        wait_for(lambda: first.value("monitord_store_healthy") == 0, 30, "the store fault")
        assert first.alive() and PASSWORD not in (tmp_path / "daemon.log").read_text()
        postgres_sql(postgres_server, f"ALTER ROLE {USER} LOGIN")
        wait_for(lambda: first.value("monitord_store_healthy") == 1, 30, "the store's recovery")
        assert monitord("run", "--config", str(other)).returncode == 4  # the lock is held again
        # kill -9 closes the lock's connection: a restart takes the store
        first.proc.stop(signal.SIGKILL)
        first.start()
        wait_for(lambda: pg_started(postgres_dsn) == 2, 20, "the second start journaled")
    finally:
        postgres_sql(postgres_server, f"ALTER ROLE {USER} LOGIN")
        first.proc.stop(signal.SIGKILL)


@pytest.mark.integration
def test_cli_verbs_name_a_damaged_store_and_what_to_do(tmp_path):
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "monitord.yaml", state, free_port(), free_port())
    asyncio.run(SQLiteStore(state).close())
    db = sqlite3.connect(state)
    db.execute("DROP TABLE journal")
    db.close()
    for verb in (["run"], ["journal"], ["maintenance", "list"], ["approve", "local"], ["ack", "1"],
                 ["report", "list"]):
        out = monitord(*verb, "--config", str(config))
        assert out.returncode == 3, (verb, out.stdout, out.stderr)
        assert f"{state}: table 'journal' is missing" in out.stderr and "restore the last backup" in out.stderr
        assert "Traceback" not in out.stderr
    db = sqlite3.connect(state)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='journal'").fetchone()[0] == 0  # not re-created
    db.close()


@pytest.mark.integration
def test_unreadable_rows_do_not_stop_the_daemon_from_starting(tmp_path):
    port = free_port()
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "monitord.yaml", state, port, free_port())
    asyncio.run(SQLiteStore(state).close())
    db = sqlite3.connect(state)
    db.execute("INSERT INTO check_state VALUES ('local/closed', 2, 1, 2, 1.0, 1.0, 1.0, '{\"status\": 9', 1)")
    db.execute("INSERT INTO escalation VALUES ('local', '{\"phase\": \"teleporting\"}')")
    db.execute("INSERT INTO heartbeats VALUES ('local', 1.0, 42, 'odd')")
    db.commit()
    db.close()
    daemon = Daemon(tmp_path, config, port, state=state).start()
    try:
        wait_for(lambda: daemon.value("monitord_check_state", check="closed") == 2, 20, "the closed port confirmed")
    finally:
        daemon.proc.stop(signal.SIGTERM)
    log = daemon.proc.output()
    assert "Traceback" not in log and log.count("moved to damaged_rows and skipped") == 3, log
    db = sqlite3.connect(state)
    assert sorted(db.execute("SELECT tbl, row_key FROM damaged_rows")) == [
        ("check_state", "local/closed"), ("escalation", "local"), ("heartbeats", "local")]
    db.close()


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs of our own, to fill up."""
    need_root()
    mount = need_binary("mount")
    directory = tmp_path / "fs"
    directory.mkdir()
    subprocess.run([mount, "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(directory)], check=True)
    yield directory
    subprocess.run([need_binary("umount"), "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem is full, to the last byte."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


@pytest.mark.integration
def test_a_full_disk_at_start_up_is_a_clear_error(tmp_path, small_fs):
    state = small_fs / "state.db"
    config = write_config(tmp_path / "monitord.yaml", state, free_port(), free_port())
    asyncio.run(SQLiteStore(state).close())
    fill(small_fs)
    out = monitord("run", "--config", str(config))
    assert out.returncode == 3, out.stderr
    assert f"{state}: " in out.stderr and f"the filesystem of {small_fs} is full" in out.stderr
    assert "free space there" in out.stderr
    assert "Traceback" not in out.stderr
    fresh = write_config(tmp_path / "fresh.yaml", small_fs / "new" / "state.db", free_port(), free_port())
    out = monitord("run", "--config", str(fresh))  # no room to create a store at all
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    assert f"the filesystem of {small_fs / 'new'} is full" in out.stderr


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: records each POSTed JSON document."""

    received: list[dict] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], Hook.received
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_a_full_disk_at_run_time_holds_pages_once_and_resumes(tmp_path, small_fs, hook):
    hook_port, received = hook
    port = free_port()
    state = small_fs / "state.db"
    config = write_config(tmp_path / "monitord.yaml", state, port, free_port(), hook_port)
    (tmp_path / "api.key").write_text("api-secret\n")
    config.write_text(config.read_text().replace("daemon:\n", f"daemon:\n  api_token: {{file: {tmp_path / 'api.key'}}}\n"))
    daemon = Daemon(tmp_path, config, port, state=state).start()
    try:
        wait_for(lambda: daemon.value("monitord_check_state", check="closed") == 2, 20, "the closed port confirmed")
        assert daemon.value("monitord_store_healthy") == 1
        wait_for(lambda: any(r["details"].get("kind") == "service_failed" for r in received), 20, "its page")
        ballast = fill(small_fs)
        wait_for(lambda: daemon.value("monitord_store_healthy") == 0, 20, "the store reported unhealthy")
        wait_for(lambda: any(r["details"].get("kind") == "store_unhealthy" for r in received), 20, "the direct page")
        runs = daemon.value("monitord_probe_results_total", kind="tcp", status="critical", reason="refused")
        wait_for(lambda: daemon.value("monitord_probe_results_total", kind="tcp", status="critical",
                                      reason="refused") >= runs + 3, 20, "probing to go on")
        ack = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/incidents/1/ack", data=b"", method="POST",
                                     headers={"Authorization": "Bearer api-secret"})
        with pytest.raises(urllib.error.HTTPError) as refused:  # an ack cannot be recorded: try again later
            urllib.request.urlopen(ack, timeout=10)
        assert refused.value.code == 503 and "state store" in json.loads(refused.value.read())["error"]
        reloaded = daemon.value("monitord_config_last_reload_success_timestamp_seconds")
        daemon.proc.popen.send_signal(signal.SIGHUP)  # a reload meanwhile: its journal line is lost, not the daemon
        wait_for(lambda: daemon.value("monitord_config_last_reload_success_timestamp_seconds") > reloaded, 20,
                 "the reload")
        store_pages = [r for r in received if r["details"].get("kind") == "store_unhealthy"]
        assert len(store_pages) == 1 and store_pages[0]["action"] == "trigger"
        assert f"the filesystem of {small_fs} is full" in store_pages[0]["summary"]
        ballast.unlink()
        wait_for(lambda: daemon.value("monitord_store_healthy") == 1, 20, "the store writable again")
        with urllib.request.urlopen(ack, timeout=10) as answer:
            assert json.loads(answer.read()) == {"incident": 1, "acknowledged": 1}
        wait_for(lambda: [r["action"] for r in received if r["dedup_key"] == store_pages[0]["dedup_key"]]
                 == ["trigger", "resolve"], 20, "the direct page resolved")
        assert daemon.alive()
        assert ("store", "unwritable", "recovered") in [row[:3] for row in daemon.journal()]
        daemon.proc.stop(signal.SIGTERM)
        assert daemon.proc.popen.returncode == 0
    finally:
        daemon.proc.stop(signal.SIGKILL)
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log
    assert log.count("every automatic action is held") == 1
    assert len(log.splitlines()) < 60, log
