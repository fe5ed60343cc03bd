"""Opening the configured state store (``daemon.store``): SQLite at ``daemon.state_path`` or PostgreSQL."""

from __future__ import annotations

from monitord.config import DaemonSettings
from monitord.records.postgres import PostgresLock, PostgresStore
from monitord.records.state import SQLiteStore
from monitord.records.store import StateError, Store


def _dsn(settings: DaemonSettings) -> str:
    try:
        return settings.store.dsn.read()
    except (LookupError, OSError, UnicodeError) as exc:
        raise StateError(f"daemon.store.dsn cannot be read: {exc}") from None


async def open_store(settings: DaemonSettings) -> Store:
    """The configured store, opened (and migrated); :class:`StateError` if it cannot be."""
    if settings.store.kind == "sqlite":
        return SQLiteStore(settings.state_path)
    return await PostgresStore.connect(_dsn(settings), pool_size=settings.store.pool_size,
                                       statement_timeout=settings.store.statement_timeout)


async def lock_postgres(settings: DaemonSettings) -> PostgresLock:
    """The one-daemon lock of a PostgreSQL store, taken (:class:`StoreLocked` if another holds it)."""
    lock = PostgresLock(_dsn(settings), timeout=settings.store.statement_timeout)
    await lock.acquire()
    return lock
