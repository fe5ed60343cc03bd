"""Durable state on SQLite: per-check state, incidents, the append-only action journal, pages.

:class:`monitord.records.store.Store` is the interface the daemon uses (four repositories and
a unit of work); :class:`SQLiteStore` implements it on an embedded SQLite database in WAL
mode. Everything written inside :meth:`SQLiteStore.transaction` is committed (and, when
``durable``, synced to disk) before the block returns, so a decision journaled before an
action survives ``kill -9`` of the daemon.

The schema is versioned (``PRAGMA user_version``) and changed only by the ordered
:data:`MIGRATIONS`; opening a store runs ``PRAGMA quick_check``, upgrades an older schema in
one transaction (the version read under the write lock), and refuses a damaged, foreign or newer database, or one missing a
table, with a :class:`StateError` that names the file and says what to do. A table is never
re-created behind the operator's back. A row that cannot be decoded (bad JSON, an unknown
status) is moved to ``damaged_rows`` and logged, never fatal.

One daemon per store: ``monitord run`` holds a :class:`StoreLock` (``flock`` on a file
beside the database) for its lifetime. The CLI's verbs do not take it: they read, or write
small records (maintenance windows, approvals, acks, report texts) in short transactions
that SQLite's own locking serialises with the daemon's.

A write that fails at run time (disk full, I/O error, a damaged page) raises
:class:`StoreFault` and sets :attr:`SQLiteStore.fault` until :meth:`SQLiteStore.probe`
finds the store writable again; the daemon holds every automatic action meanwhile, since
nothing can be journaled before it is done.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Sequence, TypeVar

from monitord.shared import redact
from monitord.run.checkstate import CheckState
from monitord.records.store import (  # noqa: F401 - the interface's records, importable from here too
    Incident, JournalEntry, Maintenance, OutboxItem, PageRecord, ReportRecord, SlaTimer, StateError, Store,
    StoredCheck, StoreFault, StoreLocked, incident_of_host,
)
from monitord.shared.results import Heartbeat, Result, Status

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLICATION_ID = 0x4D4F4E44  # "MOND" in the database header: this file is a monitord store
MIN_FREE_BYTES = 8 << 20
"""A store that failed a write counts as writable again only with this much free space."""

_BASELINE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE check_state (
    check_id      TEXT PRIMARY KEY,
    status        INTEGER NOT NULL,
    hard          INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    last_run      REAL NOT NULL,
    last_change   REAL NOT NULL,
    problem_since REAL,
    last_result   TEXT,
    incident_id   INTEGER
);
CREATE TABLE incidents (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    host       TEXT NOT NULL,
    check_name TEXT NOT NULL,
    kind       TEXT NOT NULL,
    opened_at  REAL NOT NULL,
    detected_at REAL NOT NULL,
    closed_at  REAL,
    summary    TEXT NOT NULL
);
CREATE INDEX incidents_open ON incidents (closed_at);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    event       TEXT NOT NULL,
    host        TEXT,
    check_name  TEXT,
    incident_id INTEGER,
    decision    TEXT,
    reason      TEXT,
    outcome     TEXT,
    ref         INTEGER,
    detail      TEXT
);
CREATE INDEX journal_incident ON journal (incident_id);
CREATE TABLE escalation (host TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE pages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER,
    host        TEXT,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    policy      TEXT NOT NULL,
    summary     TEXT NOT NULL,
    step        INTEGER NOT NULL DEFAULT 0,
    opened_at   REAL NOT NULL,
    next_at     REAL,              -- when the next tier is paged unless acknowledged
    paged       TEXT NOT NULL DEFAULT '[]',  -- [integration, dedup_key] pairs paged so far
    acked_at    REAL,
    acked_by    TEXT,
    ack_sent    INTEGER NOT NULL DEFAULT 0,
    closed_at   REAL
);
CREATE TABLE sla_timers (
    incident_id INTEGER NOT NULL,
    name        TEXT NOT NULL,     -- engineer_on_site, replacement_on_network
    host        TEXT,
    started_at  REAL NOT NULL,
    due         REAL NOT NULL,
    stopped_at  REAL,
    breached_at REAL,
    PRIMARY KEY (incident_id, name)
);
CREATE TABLE maintenance (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    target  TEXT NOT NULL,          -- host:NAME, group:NAME or tag:NAME
    starts  REAL NOT NULL,
    ends    REAL NOT NULL,
    reason  TEXT NOT NULL,
    created_by TEXT
);
CREATE TABLE quarantine (host TEXT PRIMARY KEY, since REAL NOT NULL, reason TEXT NOT NULL, by TEXT);
CREATE TABLE approvals (
    host TEXT PRIMARY KEY, answer TEXT NOT NULL, at REAL NOT NULL, by TEXT
);
CREATE TABLE heartbeats (
    host TEXT PRIMARY KEY, at REAL NOT NULL, status INTEGER NOT NULL, message TEXT NOT NULL
);
CREATE TABLE reports (
    incident_id  INTEGER PRIMARY KEY,   -- the incident the report (障害報告) is about
    root_cause   TEXT,                  -- written by the engineer (monitord report edit)
    prevention   TEXT,
    submitted_at REAL,                  -- when the report went to the customer (monitord report submit)
    submitted_by TEXT
);
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    integration TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    action      TEXT NOT NULL,
    recipients  TEXT NOT NULL DEFAULT '',  -- e-mail addresses the message names, sorted
    message     TEXT NOT NULL,          -- remediation.pagers.Message as JSON
    created_at  REAL NOT NULL,
    due         REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, dead
    last_error  TEXT,
    done_at     REAL,
    UNIQUE (integration, dedup_key, action, recipients)
);
CREATE INDEX outbox_pending ON outbox (state, due);
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: the schema as first released (stores from before versioning are stamped 1 once checked)
    _BASELINE + f"PRAGMA application_id={APPLICATION_ID};\n",
    # 2: rows that could not be decoded are kept here instead of crashing start-up
    """
    CREATE TABLE damaged_rows (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       REAL NOT NULL,
        tbl      TEXT NOT NULL,
        row_key  TEXT,
        data     TEXT NOT NULL,   -- the row as JSON, as it was read
        error    TEXT NOT NULL
    );
    DELETE FROM meta WHERE key='schema_version';  -- PRAGMA user_version says it now
    """,
)
"""Schema changes, in order: ``MIGRATIONS[n]`` takes a store from version ``n`` to ``n + 1``.
Add a step to change the schema; never edit one that was released."""

SCHEMA_VERSION = len(MIGRATIONS)


def _detail(text: str | None) -> Mapping:
    """A journal entry's detail; the journal is append-only, so an unreadable one is shown, not moved."""
    try:
        detail = json.loads(text) if text else {}
    except ValueError:
        detail = None
    return detail if isinstance(detail, dict) else {"unreadable": text}


_RESTORE = ("stop monitord, move the file (and its -wal and -shm files) aside for analysis, then restore the last "
            "backup, or start with no file to begin an empty store (open incidents, the journal and queued pages "
            "are then lost)")

_FAULTS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CANTOPEN", "SQLITE_READONLY",
           "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_PERM")


def _is_fault(exc: sqlite3.Error) -> bool:
    """A failure of the store itself (space, disk, damage, locks), not of the statement."""
    return (getattr(exc, "sqlite_errorname", "") or "").startswith(_FAULTS)


def _short_of_space(path: Path) -> str | None:
    """Why ``path`` cannot be written for want of space (under :data:`MIN_FREE_BYTES` free), if so."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    if free >= MIN_FREE_BYTES:
        return None
    return f"the filesystem of {path.parent} is full ({free} bytes free, {MIN_FREE_BYTES} needed): free space there"


def _advice(exc: sqlite3.Error, path: Path) -> str:
    """What the operator should do about ``exc``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL" or name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        space = _short_of_space(path)
        if space:
            return space
    if name == "SQLITE_FULL":
        return f"the filesystem of {path.parent} is full: free space there"
    if name.startswith("SQLITE_IOERR"):
        return f"the disk under {path.parent} failed or is full: check free space and the kernel log"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return "the file is damaged or not a monitord state database: " + _RESTORE
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN")):
        return f"check the permissions of {path} and {path.parent} (the daemon's user must write both)"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "another process kept a write lock on it for too long"
    return "see the SQLite error above"


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of ``script``, one by one (triggers and quoted semicolons kept whole)."""
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \t\n;"):
                yield statement
            statement = ""


def _objects(db: sqlite3.Connection) -> dict[tuple[str, str], list[str]]:
    """The schema objects of ``db``: (type, name) -> column names (empty for indexes and triggers)."""
    out: dict[tuple[str, str], list[str]] = {}
    for kind, name in db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall():
        columns = [row[1] for row in db.execute(f'PRAGMA table_info("{name}")')] if kind == "table" else []
        out[(kind, name)] = columns
    return out


@cache
def _expected(version: int) -> dict[tuple[str, str], list[str]]:
    """The schema objects a store of ``version`` has: the migrations applied to an empty database."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for script in MIGRATIONS[:version]:
            db.executescript(script)
        return _objects(db)
    finally:
        db.close()


class FaultFlag:
    """A store's fault: what keeps it from being written (None when it can be), logged once
    when it starts; every automatic action is held while it is set."""

    fault: str | None = None

    def _set_fault(self, message: str) -> None:
        if self.fault is None:
            log.error("state store: %s; every automatic action is held until the store can be written again", message)
        self.fault = message


class SQLiteStore(FaultFlag):
    """The embedded default store (SQLite, WAL): :class:`monitord.records.store.Store`.

    Statements run inline, on the event loop's thread, inside the ``async`` methods: a
    statement takes microseconds, and a thread hand-off per call costs more CPU than it saves
    (``benchmarks/store_modes.py``); a durable commit's fsync is the one wait, and it precedes
    an action anyway. Used from one event loop at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fault: str | None = None
        """Why the store cannot be written (a write failed, or space is short), until :meth:`probe`
        finds it writable again."""
        self._gate = asyncio.Lock()
        self._owner: asyncio.Task | None = None
        self.checks = SQLiteChecks(self)
        self.incidents = SQLiteIncidents(self)
        self.outbox = SQLiteOutbox(self)
        self.control = SQLiteControl(self)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot create state directory: {exc.strerror}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       factory=redact.Connection)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot open state database: {exc}; {_advice(exc, self.path)}") from None
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._check_integrity()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"{self.path}: cannot open state database: {exc}; {_advice(exc, self.path)}") from None
        except StateError:
            self._db.close()
            raise

    # -- opening: integrity, version, migrations ---------------------------------------------

    def _check_integrity(self) -> None:
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            if not (getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_CORRUPT"):
                raise
            problems = [str(exc)]
        if problems != ["ok"]:
            raise StateError(f"{self.path}: the state database is damaged (quick_check: {'; '.join(problems)}); "
                             + _RESTORE)

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION` in one transaction, with the version read
        under the write lock, so two processes opening a new store never both create it."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._upgrade()
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if version and version < SCHEMA_VERSION:
            log.warning("%s: state database upgraded from schema version %d to %d", self.path, version,
                        SCHEMA_VERSION)

    def _upgrade(self) -> int:
        """Apply the missing migrations (inside :meth:`_migrate`'s transaction); return the version found."""
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = _objects(db)
        if app_id not in (0, APPLICATION_ID):
            raise StateError(f"{self.path}: not a monitord state database (application id {app_id:#x}); "
                             "point daemon.state_path at monitord's own file")
        if version > SCHEMA_VERSION:
            raise StateError(f"{self.path}: schema version {version} is newer than this monitord "
                             f"({SCHEMA_VERSION}): run the newer monitord, or restore a backup made for this one")
        if version == 0 and tables:  # from before versioning, or someone else's file
            legacy = "meta" in {name for _, name in tables} and db.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
            if not legacy:
                names = ", ".join(sorted(name for kind, name in tables if kind == "table"))
                raise StateError(f"{self.path}: not a monitord state database (it has tables: {names}); "
                                 "point daemon.state_path at monitord's own file")
            version = 1
            log.warning("%s: unversioned state database taken as schema version 1", self.path)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        self._require(version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _statements(MIGRATIONS[target - 1]):
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return version

    def _require(self, version: int) -> None:
        """Every table, column, index and trigger of schema ``version`` must be there."""
        if not version:
            return
        have = _objects(self._db)
        for (kind, name), columns in _expected(version).items():
            if (kind, name) not in have:
                raise StateError(f"{self.path}: {kind} {name!r} is missing from the state database (schema version "
                                 f"{version}): it was dropped or the file was damaged; it is not re-created, so "
                                 "its data is not silently lost: " + _RESTORE)
            missing = [c for c in columns if c not in have[(kind, name)]]
            if missing:
                raise StateError(f"{self.path}: table {name!r} lacks column(s) {', '.join(missing)} of schema version "
                                 f"{version}: the file was altered or is not monitord's; " + _RESTORE)

    # -- transactions and faults ---------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self, durable: bool = False) -> AsyncIterator[None]:
        """Group this task's writes into one transaction; a block of the same task nested in
        it joins it, another task's writes wait for it to end.

        A write that fails for want of space, an I/O error or a damaged page raises
        :class:`StoreFault` (and sets :attr:`fault`); nothing of the block is committed.
        """
        task = asyncio.current_task()
        if self._owner is task:
            yield
            return
        async with self._gate:
            self._owner = task
            try:
                with self._sql_transaction(durable):
                    yield
            finally:
                self._owner = None

    @contextmanager
    def _sql_transaction(self, durable: bool) -> Iterator[None]:
        try:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error) and _is_fault(exc):
                raise self._faulted(exc) from None
            raise
        finally:
            if durable:
                self._quietly("PRAGMA synchronous=NORMAL")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._quietly("ROLLBACK")

    def _quietly(self, sql: str) -> None:
        try:
            self._db.execute(sql)
        except sqlite3.Error:
            pass  # the failure that matters is being reported already

    def _faulted(self, exc: sqlite3.Error) -> StoreFault:
        self._set_fault(f"{self.path}: write failed: {exc}; {_advice(exc, self.path)}")
        return StoreFault(self.fault)

    async def probe(self) -> str | None:
        """Can the store be written? Less than :data:`MIN_FREE_BYTES` free is a fault (a write
        would soon fail); after a fault, a small durable write must succeed too. Sets or
        clears :attr:`fault` and returns it."""
        space = _short_of_space(self.path)
        if space:
            self._set_fault(f"{self.path}: {space}")
            return self.fault
        if self.fault is not None:
            try:
                async with self.transaction(durable=True):
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('probed_at', ?)", (repr(time.time()),))
            except StoreFault:
                return self.fault
            log.warning("state store %s: writable again; automatic actions resume", self.path)
            self.fault = None
        return None

    async def _decoded(self, table: str, rows: list[tuple], decode: Callable[[tuple], T]) -> list[T]:
        """``decode`` each row (``rowid`` first); a row that cannot be decoded is moved to
        ``damaged_rows`` and logged instead of failing the caller."""
        out = []
        for row in rows:
            try:
                out.append(decode(row[1:]))
            except (ValueError, KeyError, TypeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("state store %s: a row of %s (%s) is unreadable (%s): moved to damaged_rows and skipped",
                          self.path, table, row[1], error)
                try:
                    async with self.transaction():
                        self._db.execute("INSERT INTO damaged_rows (at, tbl, row_key, data, error) VALUES (?,?,?,?,?)",
                                         (time.time(), table, str(row[1]), json.dumps(row[1:], default=repr), error))
                        self._db.execute(f"DELETE FROM {table} WHERE rowid=?", (row[0],))
                except StoreFault:
                    pass  # reported by the fault; the row is skipped this time and moved next time
        return out

    async def damaged_rows(self) -> list[tuple[str, str, str]]:
        """(table, key, error) of every row moved aside as unreadable, oldest first."""
        return self._db.execute("SELECT tbl, row_key, error FROM damaged_rows ORDER BY id").fetchall()

    async def close(self) -> None:
        """Write staged check states, checkpoint the WAL and close."""
        try:
            await self.checks.flush()
        except StoreFault:
            pass  # reported; those states are as stale as one tick, which a restart tolerates
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()


def _check_row(check_id: str, state: CheckState, incident_id: int | None) -> tuple:
    result = json.dumps(state.last_result.to_dict()) if state.last_result else None
    return (check_id, int(state.status), int(state.hard), state.attempt, state.last_run, state.last_change,
            state.problem_since, result, incident_id)


def _decode_check(row: tuple) -> tuple[str, StoredCheck]:
    """A check_state row (check id first) as (check id, stored state)."""
    check_id, status, hard, attempt, last_run, last_change, problem_since, last_result, incident_id = row
    state = CheckState(
        status=Status(status), hard=bool(hard), attempt=attempt, last_run=last_run,
        last_change=last_change, problem_since=problem_since,
        last_result=Result.from_dict(json.loads(last_result)) if last_result else None,
    )
    return check_id, StoredCheck(state, incident_id)


def _decode_page(r: tuple) -> PageRecord:
    """A pages row (id first) as a :class:`PageRecord`."""
    return PageRecord(*r[:10], tuple((str(i), str(k)) for i, k in json.loads(r[10])), r[11], r[12], bool(r[13]),
                      r[14])


class StagedChecks:
    """What both stores' :class:`CheckRepository` share: check states staged in memory and
    written by :meth:`flush` in one transaction (:meth:`_write` of the implementation)."""

    def __init__(self) -> None:
        self._staged: dict[str, StoredCheck] = {}

    def stage(self, check_id: str, state: CheckState, incident_id: int | None) -> None:
        """Keep a check's state for the next :meth:`flush`."""
        self._staged[check_id] = StoredCheck(state, incident_id)

    def staged(self) -> int:
        """How many check states wait for the next :meth:`flush`."""
        return len(self._staged)

    async def flush(self) -> int:
        """Write every staged check state in one transaction; return how many."""
        if not self._staged:
            return 0
        batch, self._staged = self._staged, {}
        try:
            await self._write([_check_row(c, s.state, s.incident_id) for c, s in batch.items()])
        except BaseException:
            self._staged = batch | self._staged  # staged meanwhile is newer
            raise
        return len(batch)

    async def _write(self, rows: list[tuple]) -> None:
        raise NotImplementedError


class SQLiteChecks(StagedChecks):
    """:class:`CheckRepository` on SQLite: staged check states are kept here until :meth:`flush`."""

    def __init__(self, store: SQLiteStore):
        super().__init__()
        self._s = store

    async def states(self) -> dict[str, StoredCheck]:
        """Every check's state (staged ones included), by check id."""
        rows = self._s._db.execute(
            "SELECT rowid, check_id, status, hard, attempt, last_run, last_change, problem_since, last_result,"
            " incident_id FROM check_state"
        ).fetchall()
        return dict(await self._s._decoded("check_state", rows, _decode_check)) | self._staged

    async def put(self, check_id: str, state: CheckState, incident_id: int | None) -> None:
        """Store a check's state now (it replaces a staged one)."""
        self._staged.pop(check_id, None)
        async with self._s.transaction():
            self._s._db.execute(_PUT_CHECK, _check_row(check_id, state, incident_id))

    async def _write(self, rows: list[tuple]) -> None:
        async with self._s.transaction():
            self._s._db.executemany(_PUT_CHECK, rows)

    async def forget(self, keep: set[str]) -> int:
        """Drop stored state of checks not in ``keep``; return how many."""
        self._staged = {c: s for c, s in self._staged.items() if c in keep}
        async with self._s.transaction():
            stored = [row[0] for row in self._s._db.execute("SELECT check_id FROM check_state")]
            gone = [check_id for check_id in stored if check_id not in keep]
            self._s._db.executemany("DELETE FROM check_state WHERE check_id=?", [(c,) for c in gone])
        return len(gone)

    async def escalations(self, parse: Callable[[dict], Any] = dict) -> dict[str, Any]:
        """Persisted escalation state per host, each passed through ``parse`` (a row it rejects is damaged)."""
        rows = self._s._db.execute("SELECT rowid, host, state FROM escalation").fetchall()
        return dict(await self._s._decoded("escalation", rows, lambda r: (r[0], parse(json.loads(r[1])))))

    async def put_escalation(self, host: str, state: dict) -> None:
        """Persist a host's escalation state."""
        async with self._s.transaction():
            self._s._db.execute("INSERT OR REPLACE INTO escalation VALUES (?, ?)", (host, json.dumps(state)))

    async def heartbeats(self) -> dict[str, Heartbeat]:
        """The last heartbeat of each host that posted one."""
        rows = self._s._db.execute("SELECT rowid, host, at, status, message FROM heartbeats").fetchall()
        return dict(await self._s._decoded("heartbeats", rows, lambda r: (r[0], Heartbeat(r[1], Status(r[2]), r[3]))))

    async def put_heartbeat(self, host: str, beat: Heartbeat) -> None:
        """Remember a host's latest heartbeat."""
        async with self._s.transaction():
            self._s._db.execute("INSERT OR REPLACE INTO heartbeats VALUES (?,?,?,?)",
                                (host, beat.at, int(beat.status), beat.message))


_PUT_CHECK = "INSERT OR REPLACE INTO check_state VALUES (?,?,?,?,?,?,?,?,?)"
INCIDENT_COLUMNS = "id, host, check_name, kind, opened_at, detected_at, closed_at, summary"


# the journal's SQL and rows, the same on SQLite and PostgreSQL (``mark(n)`` is the n-th
# parameter's placeholder: ``?`` or ``$n``)
JOURNAL_INSERT = ("INSERT INTO journal (ts, event, host, check_name, incident_id, decision, reason, outcome, ref, detail)"
                  " VALUES ({})")


def journal_values(entry: JournalEntry) -> tuple:
    """The row :data:`JOURNAL_INSERT` writes for ``entry``."""
    return (entry.ts, str(entry.event), entry.host, entry.check, entry.incident_id, entry.decision, entry.reason,
            entry.outcome, entry.ref, json.dumps(dict(entry.detail), ensure_ascii=False) if entry.detail else None)


def journal_query(mark: Callable[[int], str], incident_id: int | None, after_id: int, limit: int, host: str | None,
                  since: float | None, until: float | None) -> tuple[str, list]:
    """The SELECT (and its arguments) of journal entries in order, filtered as :meth:`journal` says."""
    sql = ("SELECT id, ts, event, host, check_name, incident_id, decision, reason, outcome, ref, detail"
           f" FROM journal WHERE id > {mark(1)}")
    args: list = [after_id]
    for column, op, value in (("incident_id", "=", incident_id), ("host", "=", host), ("ts", ">=", since),
                              ("ts", "<=", until)):
        if value is not None:
            args.append(value)
            sql += f" AND {column} {op} {mark(len(args))}"
    args.append(limit)
    return sql + f" ORDER BY id LIMIT {mark(len(args))}", args


def journal_entry(r: Sequence) -> JournalEntry:
    """A journal row as :func:`journal_query` selects it."""
    return JournalEntry(id=r[0], ts=r[1], event=r[2], host=r[3], check=r[4], incident_id=r[5], decision=r[6],
                        reason=r[7], outcome=r[8], ref=r[9], detail=_detail(r[10]))


class SQLiteIncidents:
    """:class:`IncidentRepository` on SQLite."""

    def __init__(self, store: SQLiteStore):
        self._s = store

    async def open(self, host: str, check: str, kind: str, opened_at: float, detected_at: float, summary: str) -> int:
        """Open an incident; return its id."""
        async with self._s.transaction():
            cur = self._s._db.execute(
                "INSERT INTO incidents (host, check_name, kind, opened_at, detected_at, summary) VALUES (?,?,?,?,?,?)",
                (host, check, kind, opened_at, detected_at, summary),
            )
        return cur.lastrowid

    async def close(self, incident_id: int, closed_at: float) -> None:
        """Mark an incident recovered."""
        async with self._s.transaction():
            self._s._db.execute("UPDATE incidents SET closed_at=? WHERE id=? AND closed_at IS NULL",
                                (closed_at, incident_id))

    async def list(self, open_only: bool = False) -> list[Incident]:
        """Incidents, newest first."""
        where = "WHERE closed_at IS NULL" if open_only else ""
        rows = self._s._db.execute(f"SELECT {INCIDENT_COLUMNS} FROM incidents {where} ORDER BY id DESC").fetchall()
        return [Incident(*row) for row in rows]

    async def get(self, incident_id: int) -> Incident | None:
        """One incident, or None."""
        row = self._s._db.execute(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id=?", (incident_id,)).fetchone()
        return Incident(*row) if row else None

    async def append(self, entry: JournalEntry) -> int:
        """Append a journal entry; return its id."""
        async with self._s.transaction():
            cur = self._s._db.execute(JOURNAL_INSERT.format(",".join("?" * 10)), journal_values(entry))
        return cur.lastrowid

    async def journal(self, incident_id: int | None = None, after_id: int = 0, limit: int = 1000, *,
                      host: str | None = None, since: float | None = None,
                      until: float | None = None) -> list[JournalEntry]:
        """Journal entries in order, optionally for one incident, one host, a time range (inclusive)."""
        sql, args = journal_query(lambda n: "?", incident_id, after_id, limit, host, since, until)
        return [journal_entry(r) for r in self._s._db.execute(sql, args).fetchall()]

    async def start_sla(self, incident_id: int, name: str, host: str | None, started_at: float, due: float) -> bool:
        """Start an SLA timer (False if it already exists)."""
        async with self._s.transaction(durable=True):
            cur = self._s._db.execute("INSERT OR IGNORE INTO sla_timers (incident_id, name, host, started_at, due)"
                                      " VALUES (?,?,?,?,?)", (incident_id, name, host, started_at, due))
        return cur.rowcount > 0

    async def update_sla(self, incident_id: int, name: str, **fields: float) -> bool:
        """Set stopped_at or breached_at; False if there is no such timer."""
        if not fields or set(fields) - {"stopped_at", "breached_at"}:
            raise ValueError("only stopped_at and breached_at can change")
        async with self._s.transaction(durable=True):
            cur = self._s._db.execute(f"UPDATE sla_timers SET {', '.join(f'{k}=?' for k in fields)}"
                                      " WHERE incident_id=? AND name=?", (*fields.values(), incident_id, name))
        return cur.rowcount > 0

    async def sla_timers(self, incident_id: int | None = None) -> list[SlaTimer]:
        """SLA timers, oldest first."""
        sql, args = ("SELECT incident_id, name, host, started_at, due, stopped_at, breached_at FROM sla_timers", [])
        if incident_id is not None:
            sql += " WHERE incident_id=?"
            args.append(incident_id)
        return [SlaTimer(*row) for row in self._s._db.execute(sql + " ORDER BY started_at", args)]

    async def report_records(self) -> dict[int, ReportRecord]:
        """What was added to incident reports, by incident id."""
        return {row[0]: ReportRecord(*row) for row in self._s._db.execute(
            "SELECT incident_id, root_cause, prevention, submitted_at, submitted_by FROM reports")}

    async def put_report_record(self, record: ReportRecord) -> None:
        """Store (replace) an incident report's record."""
        async with self._s.transaction(durable=True):
            self._s._db.execute("INSERT OR REPLACE INTO reports VALUES (?,?,?,?,?)",
                                (record.incident_id, record.root_cause, record.prevention, record.submitted_at,
                                 record.submitted_by))


# the outbox's and pages' columns, and when an outbox item is ready (no earlier item of its key
# pending): the same SQL on SQLite and PostgreSQL
OUTBOX_COLUMNS = "id, integration, dedup_key, action, message, created_at, due, attempts, state, last_error, done_at"
OUTBOX_READY = ("o.state='pending' AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.state='pending'"
                " AND p.integration=o.integration AND p.dedup_key=o.dedup_key AND p.id<o.id)")
PAGE_COLUMNS = ("id, incident_id, host, kind, severity, policy, summary, step, opened_at, next_at, paged,"
                " acked_at, acked_by, ack_sent, closed_at")


class SQLiteOutbox:
    """:class:`OutboxRepository` on SQLite."""

    def __init__(self, store: SQLiteStore):
        self._s = store

    async def enqueue(self, integration: str, dedup_key: str, action: str, message: str, now: float,
                      recipients: str = "") -> int | None:
        """Queue a page, due now; None if the same (integration, dedup_key, action, recipients) was queued before."""
        async with self._s.transaction(durable=True):
            cur = self._s._db.execute(
                "INSERT OR IGNORE INTO outbox (integration, dedup_key, action, recipients, message, created_at, due)"
                " VALUES (?,?,?,?,?,?,?)", (integration, dedup_key, action, recipients, message, now, now))
        return cur.lastrowid if cur.rowcount else None

    async def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Pending pages due at ``now``, oldest first, each behind older pending pages of its key."""
        rows = self._s._db.execute(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE {OUTBOX_READY} AND due<=? ORDER BY due, id LIMIT ?",
            (now, limit)).fetchall()
        return [OutboxItem(*row) for row in rows]

    async def next_due(self) -> float | None:
        """When the earliest pending page not waiting behind another is due, or None."""
        return self._s._db.execute(f"SELECT MIN(due) FROM outbox o WHERE {OUTBOX_READY}").fetchone()[0]

    async def failed(self, item_id: int, attempts: int, due: float, error: str) -> None:
        """Record a failed attempt of a pending page and when it is due next."""
        async with self._s.transaction():
            self._s._db.execute("UPDATE outbox SET attempts=?, due=?, last_error=? WHERE id=? AND state='pending'",
                                (attempts, due, error, item_id))

    async def done(self, item_id: int, state: str, at: float, attempts: int, error: str | None = None) -> None:
        """Mark a page ``delivered`` or ``dead`` after ``attempts`` attempts."""
        if state not in ("delivered", "dead"):
            raise ValueError(f"a finished page is delivered or dead, not {state!r}")
        async with self._s.transaction(durable=True):
            self._s._db.execute("UPDATE outbox SET state=?, done_at=?, attempts=?, last_error=COALESCE(?, last_error)"
                                " WHERE id=?", (state, at, attempts, error, item_id))

    async def items(self, state: str | None = None) -> list[OutboxItem]:
        """Pages in the outbox, optionally in one state, oldest first."""
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        return [OutboxItem(*row) for row in self._s._db.execute(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox {where} ORDER BY id", args)]

    async def depth(self) -> dict[str, int]:
        """Pending pages per integration."""
        return dict(self._s._db.execute("SELECT integration, COUNT(*) FROM outbox WHERE state='pending'"
                                        " GROUP BY integration").fetchall())

    async def open_page(self, incident_id: int | None, host: str | None, kind: str, severity: str, policy: str,
                        summary: str, now: float) -> int:
        """Start escalating a page; return its id."""
        async with self._s.transaction(durable=True):
            cur = self._s._db.execute(
                "INSERT INTO pages (incident_id, host, kind, severity, policy, summary, opened_at) VALUES (?,?,?,?,?,?,?)",
                (incident_id, host, kind, severity, policy, summary, now))
        return cur.lastrowid

    async def update_page(self, page_id: int, **fields: object) -> None:
        """Change a page's step, next_at, paged, acked_*, ack_sent or closed_at."""
        allowed = {"step", "next_at", "paged", "acked_at", "acked_by", "ack_sent", "closed_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        values = [json.dumps(v) if k == "paged" else v for k, v in fields.items()]
        async with self._s.transaction(durable=True):
            self._s._db.execute(f"UPDATE pages SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                                (*values, page_id))

    async def pages(self, open_only: bool = True, incident_id: int | None = None) -> list[PageRecord]:
        """Pages, oldest first."""
        sql, args = f"SELECT rowid, {PAGE_COLUMNS} FROM pages WHERE 1=1", []
        if open_only:
            sql += " AND closed_at IS NULL"
        if incident_id is not None:
            sql += " AND incident_id=?"
            args.append(incident_id)
        rows = self._s._db.execute(sql + " ORDER BY id", args).fetchall()
        return await self._s._decoded("pages", rows, _decode_page)


class SQLiteControl:
    """:class:`ControlRepository` on SQLite: every write durable (an operator's word)."""

    def __init__(self, store: SQLiteStore):
        self._s = store

    async def add_maintenance(self, target: str, starts: float, ends: float, reason: str,
                              created_by: str | None) -> int:
        """Add a maintenance window; return its id."""
        async with self._s.transaction(durable=True):
            cur = self._s._db.execute(
                "INSERT INTO maintenance (target, starts, ends, reason, created_by) VALUES (?,?,?,?,?)",
                (target, starts, ends, reason, created_by))
        return cur.lastrowid

    async def remove_maintenance(self, window_id: int) -> bool:
        """Remove a maintenance window; False if there was none."""
        async with self._s.transaction(durable=True):
            return self._s._db.execute("DELETE FROM maintenance WHERE id=?", (window_id,)).rowcount > 0

    async def maintenance(self) -> list[Maintenance]:
        """Every stored maintenance window, oldest first."""
        return [Maintenance(*row) for row in self._s._db.execute(
            "SELECT id, target, starts, ends, reason, created_by FROM maintenance ORDER BY id")]

    async def quarantine(self, host: str, since: float, reason: str, by: str | None) -> None:
        """Mark a host quarantined."""
        async with self._s.transaction(durable=True):
            self._s._db.execute("INSERT OR REPLACE INTO quarantine VALUES (?,?,?,?)", (host, since, reason, by))

    async def release(self, host: str) -> bool:
        """Lift a quarantine; False if the host was not quarantined."""
        async with self._s.transaction(durable=True):
            return self._s._db.execute("DELETE FROM quarantine WHERE host=?", (host,)).rowcount > 0

    async def quarantined(self) -> dict[str, tuple[float, str]]:
        """Quarantined hosts: since when and why."""
        return {host: (since, reason) for host, since, reason in
                self._s._db.execute("SELECT host, since, reason FROM quarantine")}

    async def set_approval(self, host: str, answer: str, at: float, by: str | None) -> None:
        """Record the emergency contact's answer for a host's pending action."""
        async with self._s.transaction(durable=True):
            self._s._db.execute("INSERT OR REPLACE INTO approvals VALUES (?,?,?,?)", (host, answer, at, by))

    async def take_approval(self, host: str, since: float) -> str | None:
        """Return and clear an answer recorded at or after ``since``."""
        async with self._s.transaction(durable=True):
            row = self._s._db.execute("SELECT answer FROM approvals WHERE host=? AND at>=?", (host, since)).fetchone()
            self._s._db.execute("DELETE FROM approvals WHERE host=?", (host,))
        return row[0] if row else None


class StoreLock:
    """The daemon's exclusive claim on a state store: ``flock`` on ``<db>.lock``, held (with
    the file open) for the process lifetime and released by the kernel when the process
    dies, even by ``kill -9``. The file says which process holds it."""

    def __init__(self, db_path: str | Path):
        self.path = Path(str(db_path) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreLocked` naming the process that has it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot create the store's lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            who = f"pid {pid}" if pid else "another process"
            raise StoreLocked(f"{self.path.with_suffix('')}: another monitord ({who}) is running on this state store "
                              f"(lock {self.path}); one store has one daemon: stop that one first, or give this "
                              "one its own daemon.state_path", pid) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # held all the same; a full disk is reported by the store itself

    def held(self) -> bool:
        """Whether a daemon holds the lock now: a ``flock`` on the lock file is listed in
        ``/proc/locks``. Only looks, so it can never keep a daemon from starting."""
        try:
            st = os.stat(self.path)
            with open("/proc/locks") as locks:  # e.g. "3: FLOCK  ADVISORY  WRITE 1902 fe:00:2172111 0 EOF"
                listed = [[f for f in line.split() if f != "->"] for line in locks]
        except OSError:
            return False
        file = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == file for f in listed)

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
