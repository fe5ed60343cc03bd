"""``mysql``: a MySQL or MariaDB server accepts the login and answers a query; optionally its
database size against a quota. Shared behaviour and reasons: :mod:`probes.database`.

The size is that of the tables in ``database`` (``data_length + index_length`` in
``information_schema.tables``, InnoDB's estimate), so a quota needs ``database``. Sessions use
the server's autocommit default: the probe sends no set-up statements of its own.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, suppress
from typing import AsyncIterator, Literal

import aiomysql
import pymysql
from pydantic import model_validator
from pymysql.constants import CLIENT, CR

from monitord.shared.fields import Port
from monitord.shared.results import Outcome, ProbeError, Reason
from monitord.shared.probe import ProbeCall, ProbeContext, ProbeKind
from probes.database import (
    APPLICATION_NAME, DatabaseParams, one_line, protocol_error, query_error, run_check, translated, unverified_tls,
)

_AUTH_ERRORS = frozenset({1044, 1045, 1049, 1130, 1698})
"""Server errors that refuse the login: no access to the database, access denied (bad user or
password), unknown database, host not allowed to connect, access denied (no password given
for an account that needs one)."""

_SIZE_QUERY = (
    "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
    " WHERE table_schema = DATABASE()"
)


class MysqlParams(DatabaseParams):
    """Log in to MySQL or MariaDB on ``port`` and run ``query``."""

    kind: Literal["mysql"] = "mysql"
    port: Port = 3306

    @model_validator(mode="after")
    def _quota_needs_database(self) -> "MysqlParams":
        if self.size_quota is not None and self.database is None:
            raise ValueError("size_quota needs database (the size is that of one database's tables)")
        return self


def _code(exc: pymysql.err.Error) -> tuple[int | None, str]:
    """The MySQL error number (None if the driver gave none) and message of a driver error."""
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return exc.args[0], str(exc.args[1])
    return None, str(exc.args[0]) if exc.args else type(exc).__name__


def _login_error(exc: Exception) -> BaseException | None:
    """Name what went wrong while connecting and logging in."""
    if isinstance(exc, pymysql.err.Error):
        code, message = _code(exc)
        if code == CR.CR_CONN_HOST_ERROR and isinstance(exc.__cause__, OSError):
            return exc.__cause__  # refused, unreachable, ...: the runner maps the OS error
        if code in _AUTH_ERRORS:
            return ProbeError(Reason.AUTH, f"login refused: {one_line(message)}")
        return ProbeError(Reason.PROTOCOL, f"login failed: {f'error {code}: ' if code else ''}{one_line(message)}")
    return protocol_error(exc)


def _query_error(exc: Exception) -> BaseException | None:
    """Name what went wrong while running a query: server errors (numbers below 2000) by
    their SQLSTATE, client errors (lost connection, bad packets) are PROTOCOL."""
    if isinstance(exc, pymysql.err.Error):
        code, message = _code(exc)
        if code is not None and code < 2000:
            return query_error(getattr(exc, "sqlstate", None), message)
        return ProbeError(Reason.PROTOCOL, f"{f'error {code}: ' if code else ''}{one_line(message)}")
    return protocol_error(exc)


class _Session:
    """An aiomysql connection as a :class:`probes.database.Session`."""

    def __init__(self, conn: aiomysql.Connection) -> None:
        self.conn = conn

    async def _rows(self, sql: str) -> list[tuple]:
        with translated(_query_error):
            async with self.conn.cursor() as cursor:
                await cursor.execute(sql)
                return list(await cursor.fetchall())

    async def query(self, sql: str) -> None:
        """Run ``sql`` and read its rows."""
        await self._rows(sql)

    async def size_bytes(self) -> int:
        """Data and index length of the tables in the session's database."""
        rows = await self._rows(_SIZE_QUERY)
        return int(rows[0][0])


@asynccontextmanager
async def _open(call: ProbeCall, params: MysqlParams, password: str) -> AsyncIterator[_Session]:
    """Connect and log in; quit politely on success, close the socket on any exception or
    cancellation. aiomysql closes its socket itself when the login fails or is cancelled.

    With a TLS context aiomysql encrypts only if the server offers TLS (``prefer``); ``require``
    then checks that it did, after the login (whose password travels scrambled, not in clear,
    with MySQL's native and caching_sha2 methods).
    """
    with translated(_login_error):
        conn = await aiomysql.connect(
            host=call.address, port=params.port, user=params.user, password=password, db=params.database,
            ssl=None if params.tls == "off" else unverified_tls(), autocommit=None, program_name=APPLICATION_NAME,
        )
    try:
        if params.tls == "require" and not conn.server_capabilities & CLIENT.SSL:
            raise ProbeError(Reason.PROTOCOL, f"server on port {params.port} does not offer TLS (tls: require)")
        yield _Session(conn)
    except BaseException:
        conn.close()
        raise
    try:
        with suppress(Exception):  # the check is done: a failing goodbye does not fail it
            await conn.ensure_closed()
    finally:
        conn.close()


async def run(ctx: ProbeContext, call: ProbeCall, params: MysqlParams) -> Outcome:
    """Log in, run the query, grade the size."""
    return await run_check(call, params, _open)


KIND = ProbeKind(
    "mysql", MysqlParams, run, default_interval=600.0, threshold_notice=True,
    summary="MySQL/MariaDB accepts the login and answers a query; database size within quota",
)
