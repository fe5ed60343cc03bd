"""The state stores: round trips, atomic transactions, the append-only journal; the tests taking
``store`` run on both SQLite and PostgreSQL (a fresh database of a real server), those taking
``sqlite_store`` test what is SQLite's own (the file, PRAGMAs, migrations of the file)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from monitord.records import state
from monitord.records.postgres import PostgresStore
from monitord.run.checkstate import CheckState
from monitord.shared.results import Reason, Result, Status
from monitord.records.state import Heartbeat, JournalEntry, SQLiteStore, StateError


@pytest.fixture
async def sqlite_store(tmp_path):
    s = SQLiteStore(tmp_path / "sub" / "state.db")
    yield s
    await s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "sub" / "state.db")
    else:
        s = await PostgresStore.connect(request.getfixturevalue("postgres_dsn"))
    yield s
    await s.close()


async def raw(store, sql: str):
    """Run ``sql`` in the store's own connection (inside this task's transaction, if any)."""
    if isinstance(store, SQLiteStore):
        return store._db.execute(sql)
    async with store.transaction(), store._connection() as conn:
        return await conn.execute(sql)


APPEND_ONLY = (sqlite3.IntegrityError, asyncpg.RaiseError)


async def test_check_state_round_trip(sqlite_store, tmp_path):
    store = sqlite_store
    result = Result(Status.CRITICAL, Reason.TIMEOUT, "no answer", 1.5, 1000.0, {"rtt": 1.0})
    state = CheckState(status=Status.CRITICAL, hard=False, attempt=2, last_run=1000.0, last_change=940.0,
                       problem_since=940.0, last_result=result)
    await store.checks.put("web1/ping", state, None)
    await store.close()
    reopened = SQLiteStore(tmp_path / "sub" / "state.db")
    stored = (await reopened.checks.states())["web1/ping"]
    assert stored.state == state and stored.incident_id is None
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await reopened.close()


async def test_transaction_is_atomic(store):
    with pytest.raises(RuntimeError):
        async with store.transaction(durable=True):
            await store.incidents.open("h", "c", "ping", 1.0, 1.0, "down")
            await store.incidents.append(JournalEntry(ts=1.0, event="confirmed", host="h"))
            raise RuntimeError("crash between writes")
    assert await store.incidents.list() == [] and await store.incidents.journal() == []


async def test_journal_is_append_only(store):
    entry_id = await store.incidents.append(JournalEntry(ts=1.0, event="decided", host="h", decision="reset", detail={"why": "down"}))
    with pytest.raises(APPEND_ONLY, match="append-only"):
        await raw(store, f"UPDATE journal SET decision='nothing' WHERE id={entry_id}")
    with pytest.raises(APPEND_ONLY, match="append-only"):
        await raw(store, "DELETE FROM journal")
    outcome = await store.incidents.append(JournalEntry(ts=2.0, event="outcome", host="h", outcome="done", ref=entry_id))
    entries = await store.incidents.journal()
    assert [(e.id, e.event, e.ref, dict(e.detail)) for e in entries] == [
        (entry_id, "decided", None, {"why": "down"}), (outcome, "outcome", entry_id, {})]


async def test_incidents_open_and_close(store):
    first = await store.incidents.open("h", "ping", "ping", 10.0, 5.0, "down")
    second = await store.incidents.open("h", "http", "http", 20.0, 20.0, "503")
    await store.incidents.close(first, 30.0)
    assert [i.id for i in await store.incidents.list(open_only=True)] == [second]
    assert [i.closed_at for i in await store.incidents.list()] == [None, 30.0]


async def test_forget_checks(store):
    for check_id in ("a/ping", "b/ping", "c/ping"):
        await store.checks.put(check_id, CheckState(), None)
    assert await store.checks.forget({"b/ping"}) == 2
    assert set(await store.checks.states()) == {"b/ping"}


def test_unusable_path_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="cannot create state directory"):
        SQLiteStore(tmp_path / "file" / "state.db")
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="cannot open state database"):
        SQLiteStore(tmp_path / "garbage.db")


# -- schema versions, migrations, damage -------------------------------------------------------

LEGACY = Path(__file__).parent / "data" / "state-unversioned.sql"


def legacy_store(path: Path) -> Path:
    """A store as monitord wrote it before the schema was versioned."""
    db = sqlite3.connect(path)
    db.executescript(LEGACY.read_text())
    db.close()
    return path


def pragma(path: Path, name: str) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


def test_a_new_store_is_versioned_and_marked_as_monitords(sqlite_store, tmp_path):
    path = tmp_path / "sub" / "state.db"
    assert pragma(path, "user_version") == state.SCHEMA_VERSION == len(state.MIGRATIONS) >= 2
    assert pragma(path, "application_id") == state.APPLICATION_ID


async def test_upgrade_from_the_unversioned_schema_keeps_the_data(tmp_path, caplog):
    path = legacy_store(tmp_path / "state.db")
    assert pragma(path, "user_version") == 0
    with caplog.at_level(logging.WARNING, "monitord.records.state"):
        upgraded = SQLiteStore(path)
    assert pragma(path, "user_version") == state.SCHEMA_VERSION
    assert "unversioned state database taken as schema version 1" in caplog.text
    assert f"upgraded from schema version 1 to {state.SCHEMA_VERSION}" in caplog.text
    stored = (await upgraded.checks.states())["web1/ping"]
    assert (stored.state.status, stored.state.hard, stored.state.attempt, stored.incident_id) == (Status.CRITICAL, True, 3, 1)
    assert [(i.id, i.host, i.closed_at) for i in await upgraded.incidents.list()] == [(1, "web1", None)]
    assert [(e.event, dict(e.detail)) for e in await upgraded.incidents.journal()] == [("confirmed", {"summary": "no answer"})]
    assert (await upgraded.checks.escalations())["web1"]["phase"] == "dispatched"
    assert [(w.target, w.reason) for w in await upgraded.control.maintenance()] == [("host:web1", "kernel")]
    assert [(o.integration, o.state) for o in await upgraded.outbox.items()] == [("mail", "pending")]
    assert await upgraded.damaged_rows() == []  # the table migration 2 added
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the triggers survived
        upgraded._db.execute("DELETE FROM journal")
    assert await upgraded.incidents.append(JournalEntry(ts=2.0, event="note")) == 2
    await upgraded.close()
    await SQLiteStore(path).close()  # a second open has nothing to do
    assert pragma(path, "user_version") == state.SCHEMA_VERSION


async def test_the_next_migration_upgrades_an_installed_store(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    old = SQLiteStore(path)
    await old.control.add_maintenance("host:web1", 1.0, 2.0, "kernel", "ops")
    await old.close()
    step = "ALTER TABLE maintenance ADD COLUMN ticket TEXT; UPDATE maintenance SET ticket='none';"
    monkeypatch.setattr(state, "MIGRATIONS", state.MIGRATIONS + (step,))
    monkeypatch.setattr(state, "SCHEMA_VERSION", len(state.MIGRATIONS))
    new = SQLiteStore(path)
    assert pragma(path, "user_version") == state.SCHEMA_VERSION
    assert new._db.execute("SELECT target, ticket FROM maintenance").fetchall() == [("host:web1", "none")]
    await new.close()


async def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    await SQLiteStore(path).close()
    version = pragma(path, "user_version")
    broken = "ALTER TABLE maintenance ADD COLUMN ticket TEXT; UPDATE no_such_table SET x=1;"
    monkeypatch.setattr(state, "MIGRATIONS", state.MIGRATIONS + (broken,))
    monkeypatch.setattr(state, "SCHEMA_VERSION", len(state.MIGRATIONS))
    with pytest.raises(StateError, match=r"cannot open state database: no such table: no_such_table"):
        SQLiteStore(path)
    assert pragma(path, "user_version") == version
    db = sqlite3.connect(path)
    assert "ticket" not in [row[1] for row in db.execute("PRAGMA table_info(maintenance)")]
    db.close()


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    await SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={state.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match=rf"schema version {state.SCHEMA_VERSION + 1} is newer than this monitord"):
        SQLiteStore(path)


@pytest.mark.parametrize("damage, message", [
    ("DROP TABLE journal", "table 'journal' is missing from the state database"),
    ("DROP TRIGGER journal_no_delete", "trigger 'journal_no_delete' is missing"),
    ("ALTER TABLE pages DROP COLUMN acked_by", "table 'pages' lacks column(s) acked_by"),
])
async def test_a_dropped_table_is_an_error_not_recreated(tmp_path, damage, message):
    path = tmp_path / "state.db"
    await SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(damage)
    db.commit()
    db.close()
    with pytest.raises(StateError, match=re.escape(message)) as raised:
        SQLiteStore(path)
    assert str(path) in str(raised.value) and "restore the last backup" in str(raised.value)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('journal', 'journal_no_delete')"
                      ).fetchone()[0] == (0 if damage.startswith("DROP TABLE") else 2 - damage.count("TRIGGER"))
    db.close()


async def test_a_dropped_table_of_an_unversioned_store_is_an_error(tmp_path):
    path = legacy_store(tmp_path / "state.db")
    db = sqlite3.connect(path)
    db.execute("DROP TABLE journal")
    db.close()
    with pytest.raises(StateError, match="table 'journal' is missing"):
        SQLiteStore(path)
    assert pragma(path, "user_version") == 0  # not stamped


def test_processes_opening_a_new_store_at_once_create_it_once(tmp_path):
    path = tmp_path / "state.db"
    code = f"import asyncio; from monitord.records.state import SQLiteStore; asyncio.run(SQLiteStore({str(path)!r}).close())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(6)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert pragma(path, "user_version") == state.SCHEMA_VERSION


async def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    db.close()
    with pytest.raises(StateError, match=r"not a monitord state database \(it has tables: users\)"):
        SQLiteStore(path)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE users")
    db.execute("PRAGMA application_id=1234")
    db.close()
    with pytest.raises(StateError, match=r"not a monitord state database \(application id 0x4d2\)"):
        SQLiteStore(path)


async def test_a_damaged_page_is_found_at_open(tmp_path):
    path = tmp_path / "state.db"
    s = SQLiteStore(path)
    async with s.transaction():
        for i in range(2000):
            await s.incidents.append(JournalEntry(ts=float(i), event="note", reason="x" * 200))
    await s.close()
    page = pragma(path, "page_size")
    pages = path.stat().st_size // page
    assert pages > 50
    with open(path, "r+b") as f:  # a run of pages in the middle of the journal's b-tree
        f.seek(page * (pages // 2))
        f.write(random.Random(9).randbytes(page * 4))
    with pytest.raises(StateError, match=r"the state database is damaged \(quick_check: ") as raised:
        SQLiteStore(path)
    assert str(path) in str(raised.value) and "restore the last backup" in str(raised.value)


async def test_unreadable_rows_are_moved_aside_not_fatal(store, caplog):
    from monitord.escalation.engine import state_from_dict

    await store.checks.put("good/ping", CheckState(), None)
    await store.checks.put_escalation("ok", {"phase": "idle"})
    await store.checks.put_heartbeat("beat", Heartbeat(5.0))
    page = await store.outbox.open_page(1, "h", "dispatch", "critical", "ops", "down", 1.0)
    async with store.transaction():
        await raw(store, "INSERT INTO check_state VALUES ('bad/json',0,0,0,0,0,NULL,'{not json',NULL)")
        await raw(store, "INSERT INTO check_state VALUES ('bad/status',7,0,0,0,0,NULL,NULL,NULL)")
        await raw(store, "INSERT INTO escalation VALUES ('odd', '{\"phase\": \"exploding\"}')")
        await raw(store, "INSERT INTO escalation VALUES ('torn', '{\"phase\": ')")
        await raw(store, "INSERT INTO heartbeats VALUES ('weird', 1.0, 9, 'x')")
        await store.outbox.open_page(2, "h", "dispatch", "critical", "ops", "down", 1.0)
        await raw(store, "UPDATE pages SET paged='[1]' WHERE id=2")
        await raw(store, "INSERT INTO journal (ts, event, detail) VALUES (1.0, 'note', '{oops')")
    with caplog.at_level(logging.ERROR, "monitord.records"):
        assert set(await store.checks.states()) == {"good/ping"}
        assert set(await store.checks.escalations(state_from_dict)) == {"ok"}
        assert set(await store.checks.heartbeats()) == {"beat"}
        assert [p.id for p in await store.outbox.pages()] == [page]
    assert [dict(e.detail) for e in await store.incidents.journal()] == [{"unreadable": "{oops"}]
    assert sorted((table, key) for table, key, _ in await store.damaged_rows()) == [
        ("check_state", "bad/json"), ("check_state", "bad/status"), ("escalation", "odd"), ("escalation", "torn"),
        ("heartbeats", "weird"), ("pages", "2")]
    assert "'exploding' is not a valid Phase" in dict(((t, k), e) for t, k, e in await store.damaged_rows())[("escalation", "odd")]
    assert caplog.text.count("moved to damaged_rows") == 6
    caplog.clear()
    with caplog.at_level(logging.ERROR, "monitord.records"):  # moved once: not logged at every read
        await store.checks.states(), await store.checks.escalations(state_from_dict), await store.checks.heartbeats(), await store.outbox.pages()
    assert caplog.text == ""


async def test_a_statement_error_is_not_a_store_fault(store):
    await store.incidents.append(JournalEntry(ts=0.5, event="note"))
    with pytest.raises(APPEND_ONLY, match="append-only"):
        async with store.transaction():
            await raw(store, "DELETE FROM journal")
    assert store.fault is None
    await store.incidents.append(JournalEntry(ts=1.0, event="note"))  # the transaction was rolled back: the store still works
    assert len(await store.incidents.journal()) == 2


async def committed_checks(store) -> dict[str, int]:
    """Check states as another connection sees them: committed rows only (check id -> attempt)."""
    if isinstance(store, PostgresStore):
        return dict(await store._fetch("SELECT check_id, attempt FROM check_state"))
    db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT check_id, attempt FROM check_state").fetchall())
    finally:
        db.close()


async def test_staged_check_states_are_read_at_once_and_written_by_one_flush(store):
    await store.checks.put("a/ping", CheckState(attempt=1), None)
    for check_id, attempt in (("a/ping", 2), ("b/ping", 1), ("c/ping", 3)):
        store.checks.stage(check_id, CheckState(status=Status.CRITICAL, hard=False, attempt=attempt), None)
    assert {c: s.state.attempt for c, s in (await store.checks.states()).items()} == {"a/ping": 2, "b/ping": 1,
                                                                                       "c/ping": 3}
    assert await committed_checks(store) == {"a/ping": 1} and store.checks.staged() == 3
    assert await store.checks.flush() == 3
    assert await committed_checks(store) == {"a/ping": 2, "b/ping": 1, "c/ping": 3} and store.checks.staged() == 0
    assert await store.checks.flush() == 0


async def test_an_immediate_write_replaces_a_staged_state(store):
    store.checks.stage("a/ping", CheckState(attempt=2), None)
    await store.checks.put("a/ping", CheckState(status=Status.CRITICAL, attempt=3), 7)
    await store.checks.flush()
    stored = (await store.checks.states())["a/ping"]
    assert (stored.state.attempt, stored.incident_id) == (3, 7)
    assert await committed_checks(store) == {"a/ping": 3}


async def test_a_failed_flush_keeps_the_states_staged_and_newer_ones_win(sqlite_store):
    store = sqlite_store
    store.checks.stage("a/ping", CheckState(attempt=1), None)
    store.checks.stage("b/ping", CheckState(attempt=1), None)
    store._db.execute("PRAGMA query_only=1")  # every write fails, as on a full disk
    with pytest.raises(state.StoreFault):
        await store.checks.flush()
    assert store.checks.staged() == 2 and store.fault is not None
    store.checks.stage("a/ping", CheckState(attempt=2), None)  # a newer result meanwhile
    store._db.execute("PRAGMA query_only=0")
    assert await store.probe() is None
    assert await store.checks.flush() == 2
    assert await committed_checks(store) == {"a/ping": 2, "b/ping": 1}


async def test_forgotten_checks_leave_the_staged_states_too(store):
    store.checks.stage("gone/ping", CheckState(), None)
    store.checks.stage("kept/ping", CheckState(), None)
    await store.checks.forget({"kept/ping"})
    assert set(await store.checks.states()) == {"kept/ping"} and store.checks.staged() == 1


async def test_another_tasks_write_waits_for_an_open_transaction_and_survives_its_rollback(store):
    """The unit of work belongs to the task that opened it: a write of another task made while
    it is suspended is not swept into it (nor into its rollback)."""
    inside, release = asyncio.Event(), asyncio.Event()

    async def failing_block() -> None:
        async with store.transaction(durable=True):
            await store.incidents.append(JournalEntry(ts=1.0, event="decided", host="a"))
            inside.set()
            await release.wait()  # suspended inside the block (a PostgreSQL round trip would be)
            raise RuntimeError("the action's preparation failed")

    async def other_write() -> int:
        await inside.wait()
        return await store.incidents.append(JournalEntry(ts=2.0, event="note", host="b"))

    block = asyncio.create_task(failing_block())
    other = asyncio.create_task(other_write())
    await inside.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not other.done()  # waits for the block
    release.set()
    with pytest.raises(RuntimeError):
        await block
    await other
    assert [(e.event, e.host) for e in await store.incidents.journal()] == [("note", "b")]


async def test_a_nested_block_of_the_same_task_joins_the_outer_one(store):
    with pytest.raises(RuntimeError):
        async with store.transaction(durable=True):
            await store.incidents.open("h", "ping", "ping", 1.0, 1.0, "down")
            async with store.transaction():
                await store.incidents.append(JournalEntry(ts=1.0, event="confirmed", host="h"))
            raise RuntimeError("later in the outer block")
    assert await store.incidents.list() == [] and await store.incidents.journal() == []



# -- PostgreSQL's own: schema version, a foreign database, a lost connection, the daemon lock ----


@pytest.mark.integration
async def test_postgres_round_trip_versioned_schema_and_a_newer_one_refused(postgres_dsn):
    from monitord.records import postgres
    from tests.db_peers import PASSWORD

    result = Result(Status.CRITICAL, Reason.TIMEOUT, "no answer", 1.5, 1000.0, {"rtt": 1.0})
    check = CheckState(status=Status.CRITICAL, hard=True, attempt=3, last_run=1000.0, last_change=940.0,
                       problem_since=940.0, last_result=result)
    store = await PostgresStore.connect(postgres_dsn)
    await store.checks.put("web1/ping", check, 4)
    await store.close()
    reopened = await PostgresStore.connect(postgres_dsn)  # migrations are not run twice
    assert (await reopened.checks.states())["web1/ping"] == state.StoredCheck(check, 4)
    assert await reopened._fetch("SELECT version FROM schema_version") == [(postgres.SCHEMA_VERSION,)]
    await raw(reopened, f"UPDATE schema_version SET version={postgres.SCHEMA_VERSION + 1}")
    await reopened.close()
    with pytest.raises(StateError, match=f"schema version {postgres.SCHEMA_VERSION + 1} is newer") as raised:
        await PostgresStore.connect(postgres_dsn)
    assert PASSWORD not in str(raised.value) and "127.0.0.1" in str(raised.value)


@pytest.mark.integration
async def test_postgres_refuses_a_database_that_is_not_a_store(postgres_dsn):
    foreign = postgres_dsn.rsplit("/", 1)[0] + "/probedb"  # holds the probe tests' fill table
    with pytest.raises(StateError, match="not a monitord state store .*fill"):
        await PostgresStore.connect(foreign)


@pytest.mark.integration
async def test_postgres_unreachable_at_open_is_a_clear_error_without_the_password(postgres_dsn):
    from tests.db_peers import PASSWORD

    wrong = postgres_dsn.replace(PASSWORD, "not-the-" + PASSWORD)
    with pytest.raises(StateError, match="cannot open the state store") as raised:
        await PostgresStore.connect(wrong)
    assert "not-the-" not in str(raised.value) and PASSWORD not in str(raised.value)
    malformed = postgres_dsn.replace("127.0.0.1:", "127.0.0.1:no-port-")
    for dsn in (malformed, "mysql" + postgres_dsn[len("postgresql"):]):
        with pytest.raises(StateError, match="cannot open the state store") as raised:
            await PostgresStore.connect(dsn)
        assert PASSWORD not in str(raised.value)


@pytest.mark.integration
async def test_postgres_processes_opening_a_new_store_at_once_create_it_once(postgres_dsn):
    code = ("import asyncio, sys\nfrom monitord.records.postgres import PostgresStore\n"
            "async def main():\n    s = await PostgresStore.connect(sys.argv[1])\n    await s.close()\n"
            "asyncio.run(main())\n")
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, postgres_dsn) for _ in range(3)]
    assert [await p.wait() for p in procs] == [0, 0, 0]


@pytest.mark.integration
async def test_postgres_lost_connections_are_a_store_fault_until_a_probe_writes_again(postgres_dsn, postgres_server):
    from tests.db_peers import PASSWORD, USER, postgres_sql

    store = await PostgresStore.connect(postgres_dsn)
    try:
        store.checks.stage("a/ping", CheckState(attempt=1), None)
        postgres_sql(postgres_server, f"ALTER ROLE {USER} NOLOGIN; SELECT pg_terminate_backend(pid) FROM "
                     f"pg_stat_activity WHERE usename='{USER}'")
        with pytest.raises(state.StoreFault):
            await store.checks.flush()
        assert store.checks.staged() == 1 and store.fault is not None and PASSWORD not in store.fault
        with pytest.raises(state.StoreFault):
            async with store.transaction(durable=True):
                await store.incidents.append(JournalEntry(ts=1.0, event="decided", host="h"))
        assert await store.probe() is not None  # still down: the probe's write fails too
        postgres_sql(postgres_server, f"ALTER ROLE {USER} LOGIN")
        assert await store.probe() is None and store.fault is None
        assert await store.checks.flush() == 1
        assert await committed_checks(store) == {"a/ping": 1} and await store.incidents.journal() == []
    finally:
        postgres_sql(postgres_server, f"ALTER ROLE {USER} LOGIN")
        await store.close()


@pytest.mark.integration
async def test_postgres_one_daemon_per_store_by_an_advisory_lock(postgres_dsn):
    from monitord.records.postgres import PostgresLock

    first = PostgresLock(postgres_dsn, application_name="monitord node-a pid 4242")
    await first.acquire()
    second = PostgresLock(postgres_dsn, application_name="monitord node-b pid 4343")
    with pytest.raises(state.StoreLocked, match="'monitord node-a pid 4242'") as raised:
        await second.acquire()
    assert raised.value.pid == 4242
    first.release()  # as a dead daemon's connection closing does
    await second.acquire()
    second.release()


@pytest.mark.integration
async def test_postgres_a_lost_lock_is_taken_again_by_the_probe_or_is_a_fault_if_another_took_it(
        postgres_dsn, postgres_server):
    from monitord.records.postgres import PostgresLock
    from tests.db_peers import postgres_sql

    def drop_lock_connections() -> None:  # as a PostgreSQL restart does
        postgres_sql(postgres_server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name LIKE 'monitord node-%'")

    store = await PostgresStore.connect(postgres_dsn)
    store.lock = PostgresLock(postgres_dsn, application_name="monitord node-a pid 4242")
    other = PostgresLock(postgres_dsn, application_name="monitord node-b pid 4343")
    try:
        await store.lock.acquire()
        drop_lock_connections()
        wait_until = asyncio.get_running_loop().time() + 10
        while not store.lock.lost() and asyncio.get_running_loop().time() < wait_until:
            await asyncio.sleep(0.05)
        assert await store.probe() is None and not store.lock.lost()  # taken again
        with pytest.raises(state.StoreLocked):
            await other.acquire()
        drop_lock_connections()
        while not store.lock.lost() and asyncio.get_running_loop().time() < wait_until:
            await asyncio.sleep(0.05)
        await other.acquire()  # another daemon started meanwhile
        fault = await store.probe()
        assert fault is not None and "lost its lock" in fault and "'monitord node-b pid 4343'" in fault
        assert await store.probe() == fault  # writes work, but the lock is not ours: still a fault
        other.release()
        assert await store.probe() is None and store.fault is None
    finally:
        other.release()
        store.lock.release()
        await store.close()
