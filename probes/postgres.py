"""``postgres``: a PostgreSQL server accepts the login and answers a query; optionally its
database size against a quota. Shared behaviour and reasons: :mod:`probes.database`.

Every setting is explicit (host, port, user, password, database, TLS), so nothing comes from
``PG*`` environment variables or ``~/.pgpass``; ``database`` defaults to the user's name, as in
libpq. The query runs over the simple query protocol (no prepared statement, so it also works
through pgbouncer in transaction mode).
"""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator, Literal

import asyncpg

from monitord.shared.fields import Port
from monitord.shared.results import Outcome, ProbeError, Reason
from monitord.shared.probe import ProbeCall, ProbeContext, ProbeKind
from probes.database import (
    APPLICATION_NAME, DatabaseParams, one_line, protocol_error, query_error, run_check, translated, unverified_tls,
)

_AUTH_CLASSES = ("28", "3D")
"""SQLSTATE classes of a refused login: invalid authorization (bad password, no pg_hba entry)
and invalid catalog name (no such database)."""
_INSUFFICIENT_PRIVILEGE = "42501"
"""No CONNECT privilege on the database."""


class PostgresParams(DatabaseParams):
    """Log in to PostgreSQL on ``port`` and run ``query``."""

    kind: Literal["postgres"] = "postgres"
    port: Port = 5432


def _login_error(exc: Exception) -> BaseException | None:
    """Name what went wrong while connecting and logging in."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate[:2] in _AUTH_CLASSES or sqlstate == _INSUFFICIENT_PRIVILEGE:
            return ProbeError(Reason.AUTH, f"login refused: {one_line(str(exc))}")
        return ProbeError(Reason.PROTOCOL, f"login failed: {sqlstate}: {one_line(str(exc))}")
    return protocol_error(exc)


def _query_error(exc: Exception) -> BaseException | None:
    """Name what went wrong while running a query."""
    if isinstance(exc, asyncpg.PostgresError):
        return query_error(exc.sqlstate, str(exc))
    return protocol_error(exc)


def _ssl(tls: str) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl`` argument for the check's ``tls`` setting (given a context, asyncpg requires TLS)."""
    if tls == "require":
        return unverified_tls()
    return "prefer" if tls == "prefer" else False


class _Session:
    """An asyncpg connection as a :class:`probes.database.Session`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def query(self, sql: str) -> None:
        """Run ``sql`` (simple query protocol; rows are discarded by the server's protocol)."""
        with translated(_query_error):
            await self.conn.execute(sql)

    async def size_bytes(self) -> int:
        """``pg_database_size`` of the current database."""
        with translated(_query_error):
            return int(await self.conn.fetchval("SELECT pg_database_size(current_database())"))


@asynccontextmanager
async def _open(call: ProbeCall, params: PostgresParams, password: str) -> AsyncIterator[_Session]:
    """Connect and log in; close gracefully on success, abort on any exception or cancellation.

    asyncpg closes its socket itself when the connect is cancelled or fails.
    """
    with translated(_login_error):
        conn = await asyncpg.connect(
            host=call.address, port=params.port, user=params.user, password=password,
            database=params.database or params.user, ssl=_ssl(params.tls), timeout=call.timeout,
            server_settings={"application_name": APPLICATION_NAME},
        )
    try:
        yield _Session(conn)
    except BaseException:
        conn.terminate()
        raise
    try:
        await conn.close()  # graceful; cancelled by the runner's timeout, asyncpg aborts instead
    except Exception:  # the check is done: a failing goodbye does not fail it
        conn.terminate()


async def run(ctx: ProbeContext, call: ProbeCall, params: PostgresParams) -> Outcome:
    """Log in, run the query, grade the size."""
    return await run_check(call, params, _open)


KIND = ProbeKind(
    "postgres", PostgresParams, run, default_interval=600.0, threshold_notice=True,
    summary="PostgreSQL accepts the login and answers a query; database size within quota",
)
