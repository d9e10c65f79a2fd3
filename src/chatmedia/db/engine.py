"""The database handle: an async engine with read and write transactions."""

from __future__ import annotations

import socket
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# Seconds to wait for a PostgreSQL connection, and for any one statement, before the
# request that needs it is answered 503 rather than left hanging.
PG_CONNECT_TIMEOUT = 5
PG_STATEMENT_TIMEOUT = 30


class DatabaseUnavailable(Exception):
    """The database cannot be reached, or did not answer in time."""


# What a lost, refused or stalled database connection raises: the driver's socket errors
# and timeouts at connect, SQLAlchemy's wrappers of them afterwards, and its pool timeout.
_UNREACHABLE = (
    ConnectionError,
    socket.gaierror,
    TimeoutError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


def _translate(error: Exception) -> Exception:
    """DatabaseUnavailable for a connection that failed or was lost mid-statement (the
    driver then invalidates it); any other error is the caller's, unchanged."""
    lost = isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated
    if not (lost or isinstance(error, _UNREACHABLE)):
        return error
    # The class name only: a driver's message can hold the connection URL.
    return DatabaseUnavailable(f"the database is unavailable ({type(error).__name__})")


class Database:
    """Owns the engine. `read()` opens a connection for queries; `write()` a transaction
    that, on SQLite, takes the write lock up front (BEGIN IMMEDIATE) so that the checks a
    workflow makes inside it stay true until it commits. On PostgreSQL, rows are locked
    where a workflow needs it (SELECT … FOR UPDATE)."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_postgresql = self.url.get_backend_name() == "postgresql"
        if self.is_postgresql:
            self.engine: AsyncEngine = create_async_engine(
                self.url,
                # A server restart leaves dead pooled connections: test before use.
                pool_pre_ping=True,
                pool_timeout=PG_CONNECT_TIMEOUT,
                connect_args={
                    "timeout": PG_CONNECT_TIMEOUT,
                    "command_timeout": PG_STATEMENT_TIMEOUT,
                },
            )
        else:
            self.engine = create_async_engine(self.url)
            _prepare_sqlite(self.engine, self.url.database)
        self._writer = self.engine.execution_options(chatmedia_write=True)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autobegins a transaction, rolled back on exit)."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (*_UNREACHABLE, sa.exc.DBAPIError) as e:
            raise _translate(e) from e

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on normal exit and rolled back on error."""
        try:
            async with self._writer.begin() as conn:
                yield conn
        except (*_UNREACHABLE, sa.exc.DBAPIError) as e:
            raise _translate(e) from e

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this process holds the lock `name` across every node for the block: a
        PostgreSQL session advisory lock, tried without waiting. SQLite serves one machine,
        whose writers its own lock already serializes: there it is always True."""
        if not self.is_postgresql:
            yield True
            return
        key = zlib.crc32(name.encode())
        async with self.read() as conn:
            held = bool(await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))))
            await conn.commit()
            try:
                yield held
            finally:
                if held:
                    await conn.scalar(sa.select(sa.func.pg_advisory_unlock(key)))
                    await conn.commit()

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
