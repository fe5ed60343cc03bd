"""The SQLite store: round trips, atomic transactions, the append-only journal."""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitord.records import state
from monitord.run.checkstate import CheckState
from monitord.shared.results import Reason, Result, Status
from monitord.records.state import Heartbeat, JournalEntry, SQLiteStore, StateError


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "sub" / "state.db")
    yield s
    s.close()


def test_check_state_round_trip(store, tmp_path):
    result = Result(Status.CRITICAL, Reason.TIMEOUT, "no answer", 1.5, 1000.0, {"rtt": 1.0})
    state = CheckState(status=Status.CRITICAL, hard=False, attempt=2, last_run=1000.0, last_change=940.0,
                       problem_since=940.0, last_result=result)
    store.put_check_state("web1/ping", state, None)
    store.close()
    reopened = SQLiteStore(tmp_path / "sub" / "state.db")
    stored = reopened.check_states()["web1/ping"]
    assert stored.state == state and stored.incident_id is None
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_transaction_is_atomic(store):
    with pytest.raises(RuntimeError):
        with store.transaction(durable=True):
            store.open_incident("h", "c", "ping", 1.0, 1.0, "down")
            store.append(JournalEntry(ts=1.0, event="confirmed", host="h"))
            raise RuntimeError("crash between writes")
    assert store.incidents() == [] and store.journal() == []


def test_journal_is_append_only(store):
    entry_id = store.append(JournalEntry(ts=1.0, event="decided", host="h", decision="reset", detail={"why": "down"}))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("UPDATE journal SET decision='nothing' WHERE id=?", (entry_id,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("DELETE FROM journal")
    outcome = store.append(JournalEntry(ts=2.0, event="outcome", host="h", outcome="done", ref=entry_id))
    entries = store.journal()
    assert [(e.id, e.event, e.ref, dict(e.detail)) for e in entries] == [
        (entry_id, "decided", None, {"why": "down"}), (outcome, "outcome", entry_id, {})]


def test_incidents_open_and_close(store):
    first = store.open_incident("h", "ping", "ping", 10.0, 5.0, "down")
    second = store.open_incident("h", "http", "http", 20.0, 20.0, "503")
    store.close_incident(first, 30.0)
    assert [i.id for i in store.incidents(open_only=True)] == [second]
    assert [i.closed_at for i in store.incidents()] == [None, 30.0]


def test_forget_checks(store):
    for check_id in ("a/ping", "b/ping", "c/ping"):
        store.put_check_state(check_id, CheckState(), None)
    assert store.forget_checks({"b/ping"}) == 2
    assert set(store.check_states()) == {"b/ping"}


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


def test_a_new_store_is_versioned_and_marked_as_monitords(store, tmp_path):
    path = tmp_path / "sub" / "state.db"
    assert pragma(path, "user_version") == state.SCHEMA_VERSION == len(state.MIGRATIONS) >= 2
    assert pragma(path, "application_id") == state.APPLICATION_ID


def test_upgrade_from_the_unversioned_schema_keeps_the_data(tmp_path, caplog):
    path = legacy_store(tmp_path / "state.db")
    assert pragma(path, "user_version") == 0
    with caplog.at_level(logging.WARNING, "monitord.records.state"):
        upgraded = SQLiteStore(path)
    assert pragma(path, "user_version") == state.SCHEMA_VERSION
    assert "unversioned state database taken as schema version 1" in caplog.text
    assert f"upgraded from schema version 1 to {state.SCHEMA_VERSION}" in caplog.text
    stored = upgraded.check_states()["web1/ping"]
    assert (stored.state.status, stored.state.hard, stored.state.attempt, stored.incident_id) == (Status.CRITICAL, True, 3, 1)
    assert [(i.id, i.host, i.closed_at) for i in upgraded.incidents()] == [(1, "web1", None)]
    assert [(e.event, dict(e.detail)) for e in upgraded.journal()] == [("confirmed", {"summary": "no answer"})]
    assert upgraded.escalation_states()["web1"]["phase"] == "dispatched"
    assert [(w.target, w.reason) for w in upgraded.maintenance()] == [("host:web1", "kernel")]
    assert [(o.integration, o.state) for o in upgraded.outbox()] == [("mail", "pending")]
    assert upgraded.damaged_rows() == []  # the table migration 2 added
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the triggers survived
        upgraded._db.execute("DELETE FROM journal")
    assert upgraded.append(JournalEntry(ts=2.0, event="note")) == 2
    upgraded.close()
    SQLiteStore(path).close()  # a second open has nothing to do
    assert pragma(path, "user_version") == state.SCHEMA_VERSION


def test_the_next_migration_upgrades_an_installed_store(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    old = SQLiteStore(path)
    old.add_maintenance("host:web1", 1.0, 2.0, "kernel", "ops")
    old.close()
    step = "ALTER TABLE maintenance ADD COLUMN ticket TEXT; UPDATE maintenance SET ticket='none';"
    monkeypatch.setattr(state, "MIGRATIONS", state.MIGRATIONS + (step,))
    monkeypatch.setattr(state, "SCHEMA_VERSION", len(state.MIGRATIONS))
    new = SQLiteStore(path)
    assert pragma(path, "user_version") == state.SCHEMA_VERSION
    assert new._db.execute("SELECT target, ticket FROM maintenance").fetchall() == [("host:web1", "none")]
    new.close()


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
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


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
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
def test_a_dropped_table_is_an_error_not_recreated(tmp_path, damage, message):
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
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


def test_a_dropped_table_of_an_unversioned_store_is_an_error(tmp_path):
    path = legacy_store(tmp_path / "state.db")
    db = sqlite3.connect(path)
    db.execute("DROP TABLE journal")
    db.close()
    with pytest.raises(StateError, match="table 'journal' is missing"):
        SQLiteStore(path)
    assert pragma(path, "user_version") == 0  # not stamped


def test_processes_opening_a_new_store_at_once_create_it_once(tmp_path):
    path = tmp_path / "state.db"
    code = f"from monitord.records.state import SQLiteStore; SQLiteStore({str(path)!r}).close()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(6)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert pragma(path, "user_version") == state.SCHEMA_VERSION


def test_a_foreign_database_is_refused(tmp_path):
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


def test_a_damaged_page_is_found_at_open(tmp_path):
    path = tmp_path / "state.db"
    s = SQLiteStore(path)
    with s.transaction():
        for i in range(2000):
            s.append(JournalEntry(ts=float(i), event="note", reason="x" * 200))
    s.close()
    page = pragma(path, "page_size")
    pages = path.stat().st_size // page
    assert pages > 50
    with open(path, "r+b") as f:  # a run of pages in the middle of the journal's b-tree
        f.seek(page * (pages // 2))
        f.write(random.Random(9).randbytes(page * 4))
    with pytest.raises(StateError, match=r"the state database is damaged \(quick_check: ") as raised:
        SQLiteStore(path)
    assert str(path) in str(raised.value) and "restore the last backup" in str(raised.value)


def test_unreadable_rows_are_moved_aside_not_fatal(store, caplog):
    from monitord.escalation.engine import state_from_dict

    store.put_check_state("good/ping", CheckState(), None)
    store.put_escalation_state("ok", {"phase": "idle"})
    store.put_heartbeat("beat", Heartbeat(5.0))
    page = store.open_page(1, "h", "dispatch", "critical", "ops", "down", 1.0)
    with store.transaction():
        store._db.execute("INSERT INTO check_state VALUES ('bad/json',0,0,0,0,0,NULL,'{not json',NULL)")
        store._db.execute("INSERT INTO check_state VALUES ('bad/status',7,0,0,0,0,NULL,NULL,NULL)")
        store._db.execute("INSERT INTO escalation VALUES ('odd', '{\"phase\": \"exploding\"}')")
        store._db.execute("INSERT INTO escalation VALUES ('torn', '{\"phase\": ')")
        store._db.execute("INSERT INTO heartbeats VALUES ('weird', 1.0, 9, 'x')")
        store.open_page(2, "h", "dispatch", "critical", "ops", "down", 1.0)
        store._db.execute("UPDATE pages SET paged='[1]' WHERE id=2")
        store._db.execute("INSERT INTO journal (ts, event, detail) VALUES (1.0, 'note', '{oops')")
    with caplog.at_level(logging.ERROR, "monitord.records.state"):
        assert set(store.check_states()) == {"good/ping"}
        assert set(store.escalation_states(state_from_dict)) == {"ok"}
        assert set(store.heartbeats()) == {"beat"}
        assert [p.id for p in store.pages()] == [page]
    assert [dict(e.detail) for e in store.journal()] == [{"unreadable": "{oops"}]
    assert sorted((table, key) for table, key, _ in store.damaged_rows()) == [
        ("check_state", "bad/json"), ("check_state", "bad/status"), ("escalation", "odd"), ("escalation", "torn"),
        ("heartbeats", "weird"), ("pages", "2")]
    assert "'exploding' is not a valid Phase" in dict(((t, k), e) for t, k, e in store.damaged_rows())[("escalation", "odd")]
    assert caplog.text.count("moved to damaged_rows") == 6
    caplog.clear()
    with caplog.at_level(logging.ERROR, "monitord.records.state"):  # moved once: not logged at every read
        store.check_states(), store.escalation_states(state_from_dict), store.heartbeats(), store.pages()
    assert caplog.text == ""


def test_a_statement_error_is_not_a_store_fault(store):
    store.append(JournalEntry(ts=0.5, event="note"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        with store.transaction():
            store._db.execute("DELETE FROM journal")
    assert store.fault is None
    store.append(JournalEntry(ts=1.0, event="note"))  # the transaction was rolled back: the store still works
    assert len(store.journal()) == 2
