"""The database handle: read and write transactions, on SQLite through synchronous
connections (chatmedia.db.sqlite), on PostgreSQL through an async engine."""

from __future__ import annotations

import socket
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, CursorResult, Dialect, ScalarResult, make_url
from sqlalchemy.sql.base import Executable

from chatmedia.db import changes, sqlite

if TYPE_CHECKING:
    # Imported for PostgreSQL only: SQLite runs on synchronous connections, and a worker
    # that never uses the asyncio extension (and greenlet) need not carry it.
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Seconds to wait for a PostgreSQL connection, and for any one statement, before the
# request that needs it is answered 503 rather than left hanging.
PG_CONNECT_TIMEOUT = 5
PG_STATEMENT_TIMEOUT = 30

_P = ParamSpec("_P")
_T = TypeVar("_T")


class DatabaseUnavailable(Exception):
    """The database cannot be reached, or did not answer in time."""


class Conn(Protocol):
    """What `Database.read()` and `write()` give, and what the repositories use of it: the
    async methods of SQLAlchemy's `AsyncConnection` (which PostgreSQL's transactions are),
    also served by `chatmedia.db.sqlite.SyncConnection`."""

    @property
    def dialect(self) -> Dialect:
        """The connection's dialect."""
        ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run a statement."""
        ...

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> CursorResult[Any]:
        """Run SQL text as the driver takes it."""
        ...

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        """The first column of the first row."""
        ...

    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]:
        """The first column of every row."""
        ...

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """`fn(connection, …)` with a synchronous connection."""
        ...

    def begin_nested(self) -> AbstractAsyncContextManager[object]:
        """A savepoint: the block's statements are undone if it raises."""
        ...


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


# SQLSTATE of a server that drops or refuses connections: class 08 (connection exception),
# and 57P (shutting down, starting up: "cannot connect now"), which asyncpg raises at
# connect as a plain DBAPIError.
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def upsert(conn: Conn, table: sa.Table) -> Any:
    """An INSERT of the connection's dialect, which takes ON CONFLICT clauses."""
    dialect = postgresql_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
    return dialect.insert(table)


def insert_ignore(conn: Conn, table: sa.Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING, in the connection's dialect."""
    return upsert(conn, table).on_conflict_do_nothing()


@contextmanager
def _outages_translated() -> Iterator[None]:
    """Raise what the block raises, a database outage as DatabaseUnavailable."""
    try:
        yield
    except (*_UNREACHABLE, sa.exc.DBAPIError) as e:
        raise _translate(e) from e


def _translate(error: Exception) -> Exception:
    """DatabaseUnavailable for a connection that failed, was refused by a server shutting
    down or starting up, or was lost mid-statement (the driver then invalidates it); any
    other error is the caller's, unchanged."""
    lost = isinstance(error, sa.exc.DBAPIError) and (
        error.connection_invalidated
        or str(getattr(error.orig, "sqlstate", "") or "").startswith(_UNAVAILABLE_SQLSTATES)
    )
    if not (lost or isinstance(error, _UNREACHABLE)):
        return error
    # The class name only: a driver's message can hold the connection URL.
    return DatabaseUnavailable(f"the database is unavailable ({type(error).__name__})")


class Database:
    """Owns the connections. `read()` opens a transaction for queries; `write()` one that,
    on SQLite, takes the write lock up front (the process's, then BEGIN IMMEDIATE) so that
    the checks a workflow makes inside it stay true until it commits. On PostgreSQL, rows
    are locked where a workflow needs it (SELECT … FOR UPDATE)."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        # Called with the names of cached rows a write changed, once it has committed
        # (chatmedia.db.changes); the services set it.
        self.on_commit: Callable[[Sequence[str]], None] | None = None
        self.is_postgresql = self.url.get_backend_name() == "postgresql"
        self._engine: AsyncEngine | None = None
        self._sqlite: sqlite.SqliteConnections | None = None
        if self.is_postgresql:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._engine = create_async_engine(
                self.url,
                # A server restart leaves dead pooled connections: test before use.
                pool_pre_ping=True,
                pool_timeout=PG_CONNECT_TIMEOUT,
                connect_args={
                    "timeout": PG_CONNECT_TIMEOUT,
                    "command_timeout": PG_STATEMENT_TIMEOUT,
                },
            )
            self._pg_writer = self._engine.execution_options(chatmedia_write=True)
        else:
            self._sqlite = sqlite.SqliteConnections(self.url)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        """A connection for reads (in a transaction, rolled back on exit)."""
        if self._sqlite is None:
            async with self._pg_session() as async_conn:
                yield async_conn
            return
        with _outages_translated():
            async with self._sqlite.read() as conn:
                yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        """A write transaction, committed on normal exit and rolled back on error; the
        changes to cached rows it noted are handed to `on_commit` once it committed."""
        with changes.collecting() as changed, _outages_translated():
            if self._sqlite is not None:
                async with self._sqlite.write() as conn:
                    yield conn
            else:
                async with self._pg_writer.begin() as async_conn:
                    yield async_conn
                    if changed:
                        await changes.notify(async_conn, changed)
        if changed and self.on_commit is not None:
            self.on_commit(changed)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this process holds the lock `name` across every node for the block: a
        PostgreSQL session advisory lock, tried without waiting. SQLite serves one machine,
        whose writers its own lock already serializes: there it is always True."""
        if not self.is_postgresql:
            yield True
            return
        key = zlib.crc32(name.encode())
        async with self._pg_session() as conn:
            held = bool(await conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))))
            await conn.commit()
            try:
                yield held
            finally:
                if held:
                    await conn.scalar(sa.select(sa.func.pg_advisory_unlock(key)))
                    await conn.commit()

    @asynccontextmanager
    async def _pg_session(self) -> AsyncIterator[AsyncConnection]:
        assert self._engine is not None
        with _outages_translated():
            async with self._engine.connect() as conn:
                yield conn

    async def close(self) -> None:
        """Close every connection."""
        if self._sqlite is not None:
            await self._sqlite.close()
        if self._engine is not None:
            await self._engine.dispose()
