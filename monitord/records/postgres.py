"""Durable state on PostgreSQL (asyncpg): the same :class:`monitord.records.store.Store` as
:class:`monitord.records.state.SQLiteStore`, for a store operators already run highly available.

Same records and semantics: the journal is append-only (a trigger refuses UPDATE and DELETE),
a block of :meth:`PostgresStore.transaction` is one PostgreSQL transaction on one connection,
owned by the task that opened it (a nested block joins it, another task's writes wait for it),
check states are staged and flushed per tick in one transaction, and every write is committed
before the block returns (PostgreSQL's commit is durable with ``synchronous_commit=on``, so
``durable`` needs nothing more).

The schema is versioned in a ``schema_version`` table and changed only by the ordered
:data:`MIGRATIONS`, applied in one transaction under a transaction-level advisory lock (two
processes opening a new store create it once); a newer schema is refused with the same
:class:`StateError` as SQLite's.

A write that fails because PostgreSQL cannot be reached (connection lost, server shutting down
or starting, disk full, a timeout) raises :class:`StoreFault` and sets :attr:`PostgresStore.fault`
until :meth:`PostgresStore.probe` writes again; the pool opens a new connection on the next
use, so the daemon's periodic probe is the reconnect (its interval is the backoff). The DSN
(and its password) is never logged nor put in an error text.

High availability (several daemons on one PostgreSQL, fenced host leases) is the next step of
issue #13; for now one daemon per store, held by :class:`PostgresLock`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, TypeVar

import asyncpg

from monitord.records.state import (
    INCIDENT_COLUMNS, JOURNAL_INSERT, FaultFlag, OUTBOX_COLUMNS, OUTBOX_READY, PAGE_COLUMNS, StagedChecks, _check_row,
    _decode_check, _decode_page, journal_entry, journal_query, journal_values,
)
from monitord.records.store import (
    Incident, JournalEntry, Maintenance, OutboxItem, PageRecord, ReportRecord, SlaTimer, StateError, StoredCheck,
    StoreFault, StoreLocked,
)
from monitord.run.checkstate import CheckState
from monitord.shared.results import Heartbeat, Status

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_KEY = 0x4D4F4E44  # "MOND": the advisory lock key of the one daemon on a store, and of migrations

_BASELINE = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE check_state (
    check_id text PRIMARY KEY, status integer NOT NULL, hard integer NOT NULL, attempt integer NOT NULL,
    last_run double precision NOT NULL, last_change double precision NOT NULL, problem_since double precision,
    last_result text, incident_id bigint
);
CREATE TABLE incidents (
    id bigserial PRIMARY KEY, host text NOT NULL, check_name text NOT NULL, kind text NOT NULL,
    opened_at double precision NOT NULL, detected_at double precision NOT NULL, closed_at double precision,
    summary text NOT NULL
);
CREATE INDEX incidents_open ON incidents (closed_at);
CREATE TABLE journal (
    id bigserial PRIMARY KEY, ts double precision NOT NULL, event text NOT NULL, host text, check_name text,
    incident_id bigint, decision text, reason text, outcome text, ref bigint, detail text
);
CREATE INDEX journal_incident ON journal (incident_id);
CREATE TABLE escalation (host text PRIMARY KEY, state text NOT NULL);
CREATE TABLE pages (
    id bigserial PRIMARY KEY, incident_id bigint, host text, kind text NOT NULL, severity text NOT NULL,
    policy text NOT NULL, summary text NOT NULL, step integer NOT NULL DEFAULT 0,
    opened_at double precision NOT NULL, next_at double precision, paged text NOT NULL DEFAULT '[]',
    acked_at double precision, acked_by text, ack_sent integer NOT NULL DEFAULT 0, closed_at double precision
);
CREATE TABLE sla_timers (
    incident_id bigint NOT NULL, name text NOT NULL, host text, started_at double precision NOT NULL,
    due double precision NOT NULL, stopped_at double precision, breached_at double precision,
    PRIMARY KEY (incident_id, name)
);
CREATE TABLE maintenance (
    id bigserial PRIMARY KEY, target text NOT NULL, starts double precision NOT NULL,
    ends double precision NOT NULL, reason text NOT NULL, created_by text
);
CREATE TABLE quarantine (host text PRIMARY KEY, since double precision NOT NULL, reason text NOT NULL, by text);
CREATE TABLE approvals (host text PRIMARY KEY, answer text NOT NULL, at double precision NOT NULL, by text);
CREATE TABLE heartbeats (host text PRIMARY KEY, at double precision NOT NULL, status integer NOT NULL,
                         message text NOT NULL);
CREATE TABLE reports (incident_id bigint PRIMARY KEY, root_cause text, prevention text,
                      submitted_at double precision, submitted_by text);
CREATE TABLE outbox (
    id bigserial PRIMARY KEY, integration text NOT NULL, dedup_key text NOT NULL, action text NOT NULL,
    recipients text NOT NULL DEFAULT '', message text NOT NULL, created_at double precision NOT NULL,
    due double precision NOT NULL, attempts integer NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'pending',
    last_error text, done_at double precision, UNIQUE (integration, dedup_key, action, recipients)
);
CREATE INDEX outbox_pending ON outbox (state, due);
CREATE TABLE damaged_rows (
    id bigserial PRIMARY KEY, at double precision NOT NULL, tbl text NOT NULL, row_key text, data text NOT NULL,
    error text NOT NULL
);
CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the journal is append-only'; END $$;
CREATE TRIGGER journal_no_update BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: the schema of SQLite's version 2 (damaged_rows included)
    _BASELINE,
)
"""Schema changes, in order: ``MIGRATIONS[n]`` takes a store from version ``n`` to ``n + 1``.
Add a step to change the schema; never edit one that was released."""

SCHEMA_VERSION = len(MIGRATIONS)

_FAULTS = (
    OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, query canceled
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.exceptions.PostgresSystemError, asyncpg.exceptions.InternalServerError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby after a failover
)
"""Failures of the store itself (reach, space, the server), not of a statement."""


def process_name() -> str:
    """How this process is named to PostgreSQL (``pg_stat_activity``): its host and pid."""
    return f"monitord {socket.gethostname()} pid {os.getpid()}"


def where_is(dsn: str) -> str:
    """Where ``dsn`` points, without its user or password: ``postgresql://HOST:PORT/DB``."""
    try:
        params = asyncpg.connect_utils._parse_connect_dsn_and_args(
            dsn=dsn, host=None, port=None, user=None, password=None, passfile=None, database=None, ssl=None,
            direct_tls=False, server_settings=None, target_session_attrs=None, krbsrvname=None, gsslib=None,
            service=None, servicefile=None)
        (host, port), database = params[0][0], params[1].database
    except Exception:  # noqa: BLE001 - only for naming the server; a bad DSN fails at connect with its own error
        return "postgresql (DSN not shown)"
    return f"postgresql://{host}:{port}/{database}"


class PostgresStore(FaultFlag):
    """:class:`monitord.records.store.Store` on PostgreSQL. Open with :meth:`connect`."""

    def __init__(self, pool: asyncpg.Pool, where: str):
        self.where = where
        self.fault: str | None = None
        self.lock: PostgresLock | None = None
        """The daemon's lock on this store, if it holds one: :meth:`probe` takes it again after
        its connection was lost (a PostgreSQL restart), and is a fault while it cannot."""
        self._pool = pool
        self._gate = asyncio.Lock()
        self._owner: asyncio.Task | None = None
        self._conn: asyncpg.Connection | None = None
        self.checks = PostgresChecks(self)
        self.incidents = PostgresIncidents(self)
        self.outbox = PostgresOutbox(self)
        self.control = PostgresControl(self)

    @classmethod
    async def connect(cls, dsn: str, pool_size: int = 4, statement_timeout: float = 5.0,
                      application_name: str | None = None) -> "PostgresStore":
        """Open a pool on ``dsn``, then check and migrate the schema; :class:`StateError` (the DSN
        not in it) when PostgreSQL cannot be reached or the schema is newer or not ours."""
        where = where_is(dsn)
        settings = {"statement_timeout": str(int(statement_timeout * 1000)),
                    "application_name": application_name or process_name()}
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, timeout=statement_timeout,
                                             command_timeout=statement_timeout, server_settings=settings)
        except (*_FAULTS, asyncpg.PostgresError, ValueError) as exc:  # ValueError: a malformed DSN
            raise StateError(f"{where}: cannot open the state store: {_reason(exc)}") from None
        store = cls(pool, where)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    # -- opening: version, migrations --------------------------------------------------------

    async def _migrate(self) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY + 1)
                tables = {r[0] for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
                version = 0
                if "schema_version" in tables:
                    version = await conn.fetchval("SELECT version FROM schema_version") or 0
                elif tables:
                    raise StateError(f"{self.where}: not a monitord state store (its schema has tables: "
                                     f"{', '.join(sorted(tables))}); give monitord its own database or schema")
                else:
                    await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
                    await conn.execute("INSERT INTO schema_version VALUES (0)")
                if version > SCHEMA_VERSION:
                    raise StateError(f"{self.where}: schema version {version} is newer than this monitord "
                                     f"({SCHEMA_VERSION}): run the newer monitord, or restore a backup made for this one")
                for script in MIGRATIONS[version:]:
                    await conn.execute(script)
                await conn.execute("UPDATE schema_version SET version=$1", SCHEMA_VERSION)
        except (*_FAULTS, asyncpg.PostgresError) as exc:
            raise StateError(f"{self.where}: cannot open the state store: {_reason(exc)}") from None
        if 0 < version < SCHEMA_VERSION:
            log.warning("%s: state store upgraded from schema version %d to %d", self.where, version, SCHEMA_VERSION)

    # -- connections, transactions and faults --------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The open transaction's connection for the task that owns it, else one from the pool;
        a failure to reach PostgreSQL is a :class:`StoreFault`."""
        if self._owner is asyncio.current_task() and self._conn is not None:
            yield self._conn
            return
        conn = await self._acquire()
        try:
            yield conn
        except _FAULTS as exc:
            raise self._faulted(exc) from None
        finally:
            await self._release(conn)

    async def _acquire(self) -> asyncpg.Connection:
        """A connection from the pool (a new one if the pool's died); any failure is a :class:`StoreFault`."""
        try:
            return await self._pool.acquire()
        except (*_FAULTS, asyncpg.PostgresError) as exc:  # refused, authentication, too many clients...
            raise self._faulted(exc) from None

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self._pool.release(conn)
        except _FAULTS:
            pass  # a broken connection is dropped by the pool; the failure was reported already

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return await conn.fetch(sql, *args)

    async def _write(self, sql: str, *args: Any) -> str:
        """Run one statement in this task's transaction (its own if none); return its status ("UPDATE 1")."""
        async with self.transaction(), self._connection() as conn:
            return await conn.execute(sql, *args)

    async def _insert(self, sql: str, *args: Any) -> int | None:
        """Run one INSERT ... RETURNING id in this task's transaction; return the id (None if none)."""
        async with self.transaction(), self._connection() as conn:
            return await conn.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self, durable: bool = False) -> AsyncIterator[None]:
        """Group this task's writes into one transaction (committed, hence durable, on exit); a
        block of the same task nested in it joins it, another task's writes wait for it."""
        task = asyncio.current_task()
        if self._owner is task:
            yield
            return
        async with self._gate:
            conn = await self._acquire()
            try:
                async with conn.transaction():
                    self._owner, self._conn = task, conn
                    try:
                        yield
                    finally:
                        self._owner, self._conn = None, None
            except _FAULTS as exc:
                raise self._faulted(exc) from None
            finally:
                await self._release(conn)

    def _faulted(self, exc: BaseException) -> StoreFault:
        self._set_fault(f"{self.where}: write failed: {_reason(exc)}; check that PostgreSQL runs and is reachable")
        return StoreFault(self.fault)

    async def probe(self) -> str | None:
        """Can the store be written, and is the daemon's lock held? A lost lock is taken again
        (a fault while it cannot be: PostgreSQL away, or another daemon took the store meanwhile);
        after a fault, a small write must succeed (through a new connection if the old ones
        died). Sets or clears :attr:`fault` and returns it."""
        if self.lock is not None and self.lock.lost():
            try:
                await self.lock.acquire()
            except StoreLocked as exc:
                self._set_fault(f"this daemon lost its lock on the store (PostgreSQL restarted?) and {exc}")
                return self.fault
            except StateError as exc:
                self._set_fault(str(exc))
                return self.fault
            log.warning("state store %s: the daemon's lock was lost and is held again", self.where)
        if self.fault is not None:
            await self._pool.expire_connections()  # fresh ones: the old may be dead, or on a standby now
            try:
                await self._write("INSERT INTO meta VALUES ('probed_at', $1)"
                                  " ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value", repr(time.time()))
            except StoreFault:
                return self.fault
            log.warning("state store %s: writable again; automatic actions resume", self.where)
            self.fault = None
        return None

    async def _decoded(self, table: str, key: str, rows: list[asyncpg.Record], decode: Callable[[tuple], T]) -> list[T]:
        """``decode`` each row; one that cannot be decoded is moved to ``damaged_rows`` and logged."""
        out = []
        for row in rows:
            try:
                out.append(decode(tuple(row)))
            except (ValueError, KeyError, TypeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("state store %s: a row of %s (%s) is unreadable (%s): moved to damaged_rows and skipped",
                          self.where, table, row[0], error)
                try:
                    async with self.transaction(), self._connection() as conn:
                        await conn.execute("INSERT INTO damaged_rows (at, tbl, row_key, data, error)"
                                           " VALUES ($1,$2,$3,$4,$5)", time.time(), table, str(row[0]),
                                           json.dumps(tuple(row), default=repr), error)
                        await conn.execute(f"DELETE FROM {table} WHERE {key}=$1", row[0])
                except StoreFault:
                    pass  # reported by the fault; the row is skipped this time and moved next time
        return out

    async def damaged_rows(self) -> list[tuple[str, str, str]]:
        """(table, key, error) of every row moved aside as unreadable, oldest first."""
        return [tuple(r) for r in await self._fetch("SELECT tbl, row_key, error FROM damaged_rows ORDER BY id")]

    async def close(self) -> None:
        """Write staged check states and close the pool."""
        try:
            await self.checks.flush()
        except StoreFault:
            pass  # reported; those states are as stale as one tick, which a restart tolerates
        await self._pool.close()


def _reason(exc: BaseException) -> str:
    """What went wrong, in words that hold no DSN or password (asyncpg's messages do not)."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 1`` or ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


_PUT_CHECK = ("INSERT INTO check_state VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (check_id) DO UPDATE SET"
              " status=EXCLUDED.status, hard=EXCLUDED.hard, attempt=EXCLUDED.attempt, last_run=EXCLUDED.last_run,"
              " last_change=EXCLUDED.last_change, problem_since=EXCLUDED.problem_since,"
              " last_result=EXCLUDED.last_result, incident_id=EXCLUDED.incident_id")


class PostgresChecks(StagedChecks):
    """:class:`CheckRepository` on PostgreSQL: staged check states are kept here until :meth:`flush`."""

    def __init__(self, store: PostgresStore):
        super().__init__()
        self._s = store

    async def states(self) -> dict[str, StoredCheck]:
        """Every check's state (staged ones included), by check id."""
        rows = await self._s._fetch("SELECT check_id, status, hard, attempt, last_run, last_change, problem_since,"
                                    " last_result, incident_id FROM check_state")
        return dict(await self._s._decoded("check_state", "check_id", rows, _decode_check)) | self._staged

    async def put(self, check_id: str, state: CheckState, incident_id: int | None) -> None:
        """Store a check's state now (it replaces a staged one)."""
        self._staged.pop(check_id, None)
        await self._s._write(_PUT_CHECK, *_check_row(check_id, state, incident_id))

    async def _write(self, rows: list[tuple]) -> None:
        async with self._s.transaction(), self._s._connection() as conn:
            await conn.executemany(_PUT_CHECK, rows)

    async def forget(self, keep: set[str]) -> int:
        """Drop stored state of checks not in ``keep``; return how many."""
        self._staged = {c: s for c, s in self._staged.items() if c in keep}
        return _count(await self._s._write("DELETE FROM check_state WHERE NOT (check_id = ANY($1::text[]))",
                                           sorted(keep)))

    async def escalations(self, parse: Callable[[dict], Any] = dict) -> dict[str, Any]:
        """Persisted escalation state per host, each passed through ``parse`` (a row it rejects is damaged)."""
        rows = await self._s._fetch("SELECT host, state FROM escalation")
        return dict(await self._s._decoded("escalation", "host", rows, lambda r: (r[0], parse(json.loads(r[1])))))

    async def put_escalation(self, host: str, state: dict) -> None:
        """Persist a host's escalation state."""
        await self._s._write("INSERT INTO escalation VALUES ($1, $2) ON CONFLICT (host) DO UPDATE SET"
                             " state=EXCLUDED.state", host, json.dumps(state))

    async def heartbeats(self) -> dict[str, Heartbeat]:
        """The last heartbeat of each host that posted one."""
        rows = await self._s._fetch("SELECT host, at, status, message FROM heartbeats")
        return dict(await self._s._decoded("heartbeats", "host", rows,
                                           lambda r: (r[0], Heartbeat(r[1], Status(r[2]), r[3]))))

    async def put_heartbeat(self, host: str, beat: Heartbeat) -> None:
        """Remember a host's latest heartbeat."""
        await self._s._write("INSERT INTO heartbeats VALUES ($1,$2,$3,$4) ON CONFLICT (host) DO UPDATE SET"
                             " at=EXCLUDED.at, status=EXCLUDED.status, message=EXCLUDED.message",
                             host, beat.at, int(beat.status), beat.message)




class PostgresIncidents:
    """:class:`IncidentRepository` on PostgreSQL."""

    def __init__(self, store: PostgresStore):
        self._s = store

    async def open(self, host: str, check: str, kind: str, opened_at: float, detected_at: float, summary: str) -> int:
        """Open an incident; return its id."""
        return await self._s._insert("INSERT INTO incidents (host, check_name, kind, opened_at, detected_at, summary)"
                                     " VALUES ($1,$2,$3,$4,$5,$6) RETURNING id",
                                     host, check, kind, opened_at, detected_at, summary)

    async def close(self, incident_id: int, closed_at: float) -> None:
        """Mark an incident recovered."""
        await self._s._write("UPDATE incidents SET closed_at=$1 WHERE id=$2 AND closed_at IS NULL",
                             closed_at, incident_id)

    async def list(self, open_only: bool = False) -> list[Incident]:
        """Incidents, newest first."""
        where = "WHERE closed_at IS NULL" if open_only else ""
        return [Incident(*r) for r in await self._s._fetch(
            f"SELECT {INCIDENT_COLUMNS} FROM incidents {where} ORDER BY id DESC")]

    async def get(self, incident_id: int) -> Incident | None:
        """One incident, or None."""
        rows = await self._s._fetch(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id=$1", incident_id)
        return Incident(*rows[0]) if rows else None

    async def append(self, entry: JournalEntry) -> int:
        """Append a journal entry; return its id."""
        return await self._s._insert(JOURNAL_INSERT.format(",".join(f"${n}" for n in range(1, 11)))
                                     + " RETURNING id", *journal_values(entry))

    async def journal(self, incident_id: int | None = None, after_id: int = 0, limit: int = 1000, *,
                      host: str | None = None, since: float | None = None,
                      until: float | None = None) -> list[JournalEntry]:
        """Journal entries in order, optionally for one incident, one host, a time range (inclusive)."""
        sql, args = journal_query(lambda n: f"${n}", incident_id, after_id, limit, host, since, until)
        return [journal_entry(r) for r in await self._s._fetch(sql, *args)]

    async def start_sla(self, incident_id: int, name: str, host: str | None, started_at: float, due: float) -> bool:
        """Start an SLA timer (False if it already exists)."""
        return _count(await self._s._write(
            "INSERT INTO sla_timers (incident_id, name, host, started_at, due) VALUES ($1,$2,$3,$4,$5)"
            " ON CONFLICT DO NOTHING", incident_id, name, host, started_at, due)) > 0

    async def update_sla(self, incident_id: int, name: str, **fields: float) -> bool:
        """Set stopped_at or breached_at; False if there is no such timer."""
        if not fields or set(fields) - {"stopped_at", "breached_at"}:
            raise ValueError("only stopped_at and breached_at can change")
        sets = ", ".join(f"{k}=${n}" for n, k in enumerate(fields, start=3))
        return _count(await self._s._write(f"UPDATE sla_timers SET {sets} WHERE incident_id=$1 AND name=$2",
                                           incident_id, name, *fields.values())) > 0

    async def sla_timers(self, incident_id: int | None = None) -> list[SlaTimer]:
        """SLA timers, oldest first."""
        sql = "SELECT incident_id, name, host, started_at, due, stopped_at, breached_at FROM sla_timers"
        args = [] if incident_id is None else [incident_id]
        if args:
            sql += " WHERE incident_id=$1"
        return [SlaTimer(*r) for r in await self._s._fetch(sql + " ORDER BY started_at", *args)]

    async def report_records(self) -> dict[int, ReportRecord]:
        """What was added to incident reports, by incident id."""
        return {r[0]: ReportRecord(*r) for r in await self._s._fetch(
            "SELECT incident_id, root_cause, prevention, submitted_at, submitted_by FROM reports")}

    async def put_report_record(self, record: ReportRecord) -> None:
        """Store (replace) an incident report's record."""
        await self._s._write(
            "INSERT INTO reports VALUES ($1,$2,$3,$4,$5) ON CONFLICT (incident_id) DO UPDATE SET"
            " root_cause=EXCLUDED.root_cause, prevention=EXCLUDED.prevention, submitted_at=EXCLUDED.submitted_at,"
            " submitted_by=EXCLUDED.submitted_by",
            record.incident_id, record.root_cause, record.prevention, record.submitted_at, record.submitted_by)


class PostgresOutbox:
    """:class:`OutboxRepository` on PostgreSQL."""

    def __init__(self, store: PostgresStore):
        self._s = store

    async def enqueue(self, integration: str, dedup_key: str, action: str, message: str, now: float,
                      recipients: str = "") -> int | None:
        """Queue a page, due now; None if the same (integration, dedup_key, action, recipients) was queued before."""
        return await self._s._insert(
            "INSERT INTO outbox (integration, dedup_key, action, recipients, message, created_at, due)"
            " VALUES ($1,$2,$3,$4,$5,$6,$6) ON CONFLICT DO NOTHING RETURNING id",
            integration, dedup_key, action, recipients, message, now)

    async def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Pending pages due at ``now``, oldest first, each behind older pending pages of its key."""
        return [OutboxItem(*r) for r in await self._s._fetch(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE {OUTBOX_READY} AND due<=$1 ORDER BY due, id LIMIT $2",
            now, limit)]

    async def next_due(self) -> float | None:
        """When the earliest pending page not waiting behind another is due, or None."""
        return (await self._s._fetch(f"SELECT MIN(due) FROM outbox o WHERE {OUTBOX_READY}"))[0][0]

    async def failed(self, item_id: int, attempts: int, due: float, error: str) -> None:
        """Record a failed attempt of a pending page and when it is due next."""
        await self._s._write("UPDATE outbox SET attempts=$1, due=$2, last_error=$3 WHERE id=$4 AND state='pending'",
                             attempts, due, error, item_id)

    async def done(self, item_id: int, state: str, at: float, attempts: int, error: str | None = None) -> None:
        """Mark a page ``delivered`` or ``dead`` after ``attempts`` attempts."""
        if state not in ("delivered", "dead"):
            raise ValueError(f"a finished page is delivered or dead, not {state!r}")
        await self._s._write("UPDATE outbox SET state=$1, done_at=$2, attempts=$3,"
                             " last_error=COALESCE($4, last_error) WHERE id=$5", state, at, attempts, error, item_id)

    async def items(self, state: str | None = None) -> list[OutboxItem]:
        """Pages in the outbox, optionally in one state, oldest first."""
        where, args = ("WHERE state=$1", [state]) if state else ("", [])
        return [OutboxItem(*r) for r in await self._s._fetch(f"SELECT {OUTBOX_COLUMNS} FROM outbox {where} ORDER BY id",
                                                             *args)]

    async def depth(self) -> dict[str, int]:
        """Pending pages per integration."""
        return {r[0]: r[1] for r in await self._s._fetch(
            "SELECT integration, COUNT(*) FROM outbox WHERE state='pending' GROUP BY integration")}

    async def open_page(self, incident_id: int | None, host: str | None, kind: str, severity: str, policy: str,
                        summary: str, now: float) -> int:
        """Start escalating a page; return its id."""
        return await self._s._insert(
            "INSERT INTO pages (incident_id, host, kind, severity, policy, summary, opened_at)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7) RETURNING id", incident_id, host, kind, severity, policy, summary, now)

    async def update_page(self, page_id: int, **fields: object) -> None:
        """Change a page's step, next_at, paged, acked_*, ack_sent or closed_at."""
        allowed = {"step", "next_at", "paged", "acked_at", "acked_by", "ack_sent", "closed_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        values = [json.dumps(v) if k == "paged" else int(v) if k == "ack_sent" else v for k, v in fields.items()]
        sets = ", ".join(f"{k}=${n}" for n, k in enumerate(fields, start=2))
        await self._s._write(f"UPDATE pages SET {sets} WHERE id=$1", page_id, *values)

    async def pages(self, open_only: bool = True, incident_id: int | None = None) -> list[PageRecord]:
        """Pages, oldest first."""
        sql, args = f"SELECT {PAGE_COLUMNS} FROM pages WHERE true", []
        if open_only:
            sql += " AND closed_at IS NULL"
        if incident_id is not None:
            args.append(incident_id)
            sql += " AND incident_id=$1"
        rows = await self._s._fetch(sql + " ORDER BY id", *args)
        return await self._s._decoded("pages", "id", rows, _decode_page)


class PostgresControl:
    """:class:`ControlRepository` on PostgreSQL: every write committed (an operator's word)."""

    def __init__(self, store: PostgresStore):
        self._s = store

    async def add_maintenance(self, target: str, starts: float, ends: float, reason: str,
                              created_by: str | None) -> int:
        """Add a maintenance window; return its id."""
        return await self._s._insert("INSERT INTO maintenance (target, starts, ends, reason, created_by)"
                                     " VALUES ($1,$2,$3,$4,$5) RETURNING id", target, starts, ends, reason, created_by)

    async def remove_maintenance(self, window_id: int) -> bool:
        """Remove a maintenance window; False if there was none."""
        return _count(await self._s._write("DELETE FROM maintenance WHERE id=$1", window_id)) > 0

    async def maintenance(self) -> list[Maintenance]:
        """Every stored maintenance window, oldest first."""
        return [Maintenance(*r) for r in await self._s._fetch(
            "SELECT id, target, starts, ends, reason, created_by FROM maintenance ORDER BY id")]

    async def quarantine(self, host: str, since: float, reason: str, by: str | None) -> None:
        """Mark a host quarantined."""
        await self._s._write("INSERT INTO quarantine VALUES ($1,$2,$3,$4) ON CONFLICT (host) DO UPDATE SET"
                             " since=EXCLUDED.since, reason=EXCLUDED.reason, by=EXCLUDED.by", host, since, reason, by)

    async def release(self, host: str) -> bool:
        """Lift a quarantine; False if the host was not quarantined."""
        return _count(await self._s._write("DELETE FROM quarantine WHERE host=$1", host)) > 0

    async def quarantined(self) -> dict[str, tuple[float, str]]:
        """Quarantined hosts: since when and why."""
        return {r[0]: (r[1], r[2]) for r in await self._s._fetch("SELECT host, since, reason FROM quarantine")}

    async def set_approval(self, host: str, answer: str, at: float, by: str | None) -> None:
        """Record the emergency contact's answer for a host's pending action."""
        await self._s._write("INSERT INTO approvals VALUES ($1,$2,$3,$4) ON CONFLICT (host) DO UPDATE SET"
                             " answer=EXCLUDED.answer, at=EXCLUDED.at, by=EXCLUDED.by", host, answer, at, by)

    async def take_approval(self, host: str, since: float) -> str | None:
        """Return and clear an answer recorded at or after ``since``."""
        async with self._s.transaction(durable=True), self._s._connection() as conn:
            answer = await conn.fetchval("SELECT answer FROM approvals WHERE host=$1 AND at>=$2", host, since)
            await conn.execute("DELETE FROM approvals WHERE host=$1", host)
        return answer


class PostgresLock:
    """The daemon's exclusive claim on a PostgreSQL store: a session advisory lock on
    :data:`LOCK_KEY`, held on a dedicated connection for the process lifetime and released by
    PostgreSQL when that connection closes (the process exits or is killed with ``kill -9``).
    The holder is named by its ``application_name`` (host and pid) in ``pg_stat_activity``."""

    def __init__(self, dsn: str, application_name: str | None = None, timeout: float = 5.0):
        self._dsn = dsn
        self._where = where_is(dsn)
        self._name = application_name or process_name()
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreLocked` naming the daemon that has it."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout,
                                         server_settings={"application_name": self._name})
        except (*_FAULTS, asyncpg.PostgresError, ValueError) as exc:  # ValueError: a malformed DSN
            raise StateError(f"{self._where}: cannot open the state store: {_reason(exc)}") from None
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                holder = await conn.fetchval(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype='advisory' AND l.granted AND l.objid=$1 AND l.pid <> pg_backend_pid()",
                    LOCK_KEY & 0xFFFFFFFF)
                who = f"'{holder}'" if holder else "another process"
                pid = holder.rsplit(" ", 1)[-1] if holder else ""
                raise StoreLocked(f"{self._where}: another monitord ({who}) is running on this state store "
                                  "(PostgreSQL advisory lock); one store has one daemon for now (several is the next "
                                  "step of issue #13): stop that one first, or give this one its own database",
                                  int(pid) if pid.isdigit() else None)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    def lost(self) -> bool:
        """Whether the lock was taken and its connection has closed since (so it is not held)."""
        return self._conn is not None and self._conn.is_closed()

    def release(self) -> None:
        """Give the lock up (closing the connection releases it)."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
