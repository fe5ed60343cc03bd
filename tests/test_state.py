"""The SQLite store: round trips, atomic transactions, the append-only journal."""

from __future__ import annotations

import sqlite3

import pytest

from monitord.checkstate import CheckState
from monitord.results import Reason, Result, Status
from monitord.state import JournalEntry, SQLiteStore, StateError


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
