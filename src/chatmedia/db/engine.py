"""The database handle: an async engine with read and write transactions."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class Database:
    """Owns the engine. `read()` opens a connection for queries; `write()` a transaction
    that, on SQLite, takes the write lock up front (BEGIN IMMEDIATE) so that the checks a
    workflow makes inside it stay true until it commits."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.engine: AsyncEngine = create_async_engine(self.url)
        if self.url.get_backend_name() == "sqlite":
            _prepare_sqlite(self.engine, self.url.database)
        self._writer = self.engine.execution_options(chatmedia_write=True)

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads (autobegins a transaction, rolled back on exit)."""
        return self.engine.connect()

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction, committed on normal exit and rolled back on error."""
        return self._writer.begin()

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _prepare_sqlite(engine: AsyncEngine, database: str | None) -> None:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN rather than the driver (SQLAlchemy's
        # documented recipe for SQLite transactions).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we answer
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("chatmedia_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
