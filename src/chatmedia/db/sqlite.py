"""SQLite without a thread hop per statement: synchronous connections behind the async
methods the repositories call.

Through SQLAlchemy's `AsyncEngine` and aiosqlite, every DB-API call (cursor, execute,
fetch, BEGIN, ROLLBACK) is a round trip to aiosqlite's thread: 0.6-0.9 ms of CPU for a
lookup by key, where the same lookup on a synchronous connection takes 80 us
(docs/benchmarks.md, "What limits chatmedia"). So on SQLite:

- A read runs inline, on the event loop, on a connection of a small pool. This is the
  exception to "blocking work goes to a thread", made on measurement: in WAL mode a reader
  takes no lock the writer holds and never waits for it, and a whole read transaction by
  key (BEGIN, SELECT, ROLLBACK, SQLAlchemy included) takes 45-60 us of CPU, less than the
  hop that would move it to a thread (110-140 us). What can still block is a cold page
  cache (a disk read) and, rarely, a reader retrying while a WAL is recovered after a
  crash (bounded by READ_BUSY_MS): neither is a wait on another writer.
- A write takes the process's write lock first, in order (an `anyio.Lock`, FIFO), so that
  concurrent writers of one worker queue instead of sleeping in SQLite's busy handler, whose
  sleeps (up to 100 ms each) ignore arrival order; then the node's lock, which queues the
  processes' writers alike (chatmedia.db.writer_queue). It then runs on the one writer
  connection: BEGIN IMMEDIATE in a thread, statements inline (they change pages in memory
  under a lock already held), COMMIT in a thread (the fsync). ROLLBACK, which touches no
  disk in WAL mode, runs inline.
- Writers that queue share a commit (group commit, see `SqliteConnections.write`): under
  32 concurrent uploads a writer waited 150 ms for the lock, and BEGIN and COMMIT were a
  third of the time each one held it (docs/benchmarks.md, "Group commit").

A pooled connection serves one transaction at a time: a read takes one from the pool for
its block and gives it back rolled back, so a block that awaits something else meanwhile
cannot share its connection with another request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import sqlalchemy as sa
from anyio import to_thread
from sqlalchemy import event
from sqlalchemy.engine import (
    URL,
    Connection,
    CursorResult,
    Dialect,
    Engine,
    NestedTransaction,
    ScalarResult,
)
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.sql.base import Executable

from chatmedia.db.writer_queue import NodeWriterLock

# How long a writer waits for the write lock (this process's, then SQLite's) before it
# gives up; then the request is answered 503.
BUSY_SECONDS = 30
# How long an inline read may wait in SQLite's busy handler. In WAL mode a reader waits for
# no writer; it can find the database busy only in rare moments (recovering a WAL after a
# crash), and then it must not hold the event loop for long: it fails, and is answered 503.
READ_BUSY_MS = 100
# Idle read connections kept open. Reads run without yielding, so one is the usual need.
MAX_IDLE_READERS = 4

_P = ParamSpec("_P")
_T = TypeVar("_T")


def prepare(engine: Engine, database: str | None) -> None:
    """Set up every connection `engine` opens: WAL, durable commits, the busy timeout,
    foreign keys, and transactions begun by SQLAlchemy (BEGIN, or BEGIN IMMEDIATE for an
    engine with the `chatmedia_write` execution option)."""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN rather than the driver (SQLAlchemy's
        # documented recipe for SQLite transactions).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk before we answer
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("chatmedia_write", False)
        # On the driver's cursor: through `exec_driver_sql` the BEGIN would cost as much as
        # the lookup it opens (about 25 us of SQLAlchemy's statement machinery).
        # SQLAlchemy does not wrap what a "begin" listener raises: wrap it here, so that a
        # BEGIN IMMEDIATE that timed out is an OperationalError like any statement's.
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        dbapi_error = connection.dialect.loaded_dbapi.Error
        cursor = connection.connection.cursor()
        try:
            cursor.execute(statement)
        except dbapi_error as e:
            raise sa.exc.DBAPIError.instance(statement, None, e, dbapi_error) from e
        finally:
            cursor.close()


class SyncConnection:
    """A synchronous connection with the async methods of `AsyncConnection` that the
    repositories use. Each statement runs inline; `run_sync`, meant for longer work
    (migrations), runs in a thread."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        """The connection's dialect."""
        return self._conn.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run a statement."""
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> CursorResult[Any]:
        """Run SQL text as the driver takes it."""
        return self._conn.exec_driver_sql(statement, parameters)

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        """The first column of the first row."""
        return self._conn.scalar(statement, parameters)

    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]:
        """The first column of every row."""
        return self._conn.scalars(statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """`fn(connection, …)` in a thread."""
        return await to_thread.run_sync(partial(fn, self._conn, *args, **kwargs))

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        """A savepoint: the block's statements are undone if it raises."""
        with self._conn.begin_nested():
            yield


class SqliteConnections:
    """The read pool, the writer connection and the write lock of one process."""

    def __init__(self, url: URL) -> None:
        database = url.database
        memory = not database or database == ":memory:"
        self._engine = sa.create_engine(
            url.set(drivername="sqlite"),
            # Connections are pooled here, not by SQLAlchemy; an in-memory database exists
            # only on its one connection, which every transaction then shares (as before).
            poolclass=StaticPool if memory else NullPool,
            # BEGIN IMMEDIATE and COMMIT run in worker threads; no connection is ever used
            # by two threads at once.
            connect_args={"check_same_thread": False},
        )
        prepare(self._engine, database)
        self._write_engine = self._engine.execution_options(chatmedia_write=True)
        self._readers: list[Connection] = []
        self._writer: Connection | None = None
        self._write_lock = anyio.Lock(fast_acquire=True)
        self._node_lock = NodeWriterLock(None if memory else f"{database}-writers", BUSY_SECONDS)
        self._group: _Group | None = None  # the write transaction open for a group commit
        self._closed = False

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SyncConnection]:
        """A read transaction on a pooled connection, rolled back at the end."""
        if self._readers:
            conn = self._readers.pop()
        else:  # opening a connection reads the file, and may wait: in a thread
            conn = await to_thread.run_sync(self._open_reader)
        try:
            conn.begin()
            yield SyncConnection(conn)
        finally:
            self._give_back(conn)

    def _open_reader(self) -> Connection:
        conn = self._engine.connect()
        cursor = conn.connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")
        cursor.close()
        return conn

    def _give_back(self, conn: Connection) -> None:
        try:
            conn.rollback()
        except BaseException:
            conn.invalidate()
            raise
        if self._closed or conn.invalidated or len(self._readers) >= MAX_IDLE_READERS:
            conn.close()
        else:
            self._readers.append(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SyncConnection]:
        """A write transaction, committed before this returns on normal exit and undone on
        error, holding the process's write lock for the block.

        Writers that queue meanwhile share one commit (group commit): the block runs in a
        savepoint of the open transaction, and a writer that finds others waiting hands
        the lock on instead of committing; the last of the group commits for all, and each
        returns once that commit is on disk (or raises its error). One COMMIT's fsync and
        thread hops then serve the whole queue instead of each writer in turn."""
        await self._lock_for_writing()
        locked = True
        try:
            group = self._group
            if group is None:
                group = self._group = await self._open_group()
            savepoint = group.conn.begin_nested()
            try:
                yield SyncConnection(group.conn)
            except BaseException:
                self._undo(group, savepoint)
                raise
            savepoint.commit()
            if self._write_lock.statistics().tasks_waiting == 0 or self._closed:
                await self._commit(group)
            else:
                locked = False
                self._write_lock.release()
                await self._await_commit(group)
        finally:
            if locked:
                # This writer failed (or could not begin). The group it joined must still be
                # committed: now, unless a writer is waiting and one who handed on is queued
                # to commit it (without one, the group holds no finished block yet).
                open_group = self._group
                if open_group is not None and (
                    not self._write_lock.statistics().tasks_waiting
                    or not open_group.committer_queued
                ):
                    with anyio.CancelScope(shield=True):
                        await self._commit(open_group)
                self._write_lock.release()
        if group.error is not None:
            raise group.error

    def _undo(self, group: _Group, savepoint: NestedTransaction) -> None:
        """Undo one writer's block; if SQLite has already ended the whole transaction (as
        it does on some I/O errors), the group fails with that error."""
        try:
            savepoint.rollback()
        except BaseException as e:
            self._fail(group, e)
            raise

    async def _await_commit(self, group: _Group) -> None:
        """Wait for the group's commit; the first writer to hand on queues to commit it
        itself (shielded), in case every writer after it is cancelled before it is done."""
        if group.committer_queued:
            await group.committed.wait()
            return
        group.committer_queued = True
        with anyio.CancelScope(shield=True):
            await self._write_lock.acquire()
            try:
                if not group.committed.is_set():
                    await self._commit(group)
            finally:
                self._write_lock.release()

    async def _open_group(self) -> _Group:
        """A write transaction for a group, begun holding the node's lock."""
        node_lock = await self._node_lock.acquire()
        try:
            return _Group(await to_thread.run_sync(self._begin_write), node_lock)
        except BaseException:
            self._node_lock.release(node_lock)
            raise

    async def _commit(self, group: _Group) -> None:
        self._group = None
        try:
            await to_thread.run_sync(group.conn.commit)
        except BaseException as e:
            self._fail(group, e)
        finally:
            self._end(group)
            if self._closed:
                self._close_writer()

    def _fail(self, group: _Group, error: BaseException) -> None:
        if self._group is group:
            self._group = None
        group.error = error
        try:
            if group.conn.in_transaction():
                group.conn.rollback()
        finally:
            self._end(group)

    def _end(self, group: _Group) -> None:
        """The group's transaction is over: wake its writers, let the node's next in."""
        group.committed.set()
        self._node_lock.release(group.node_lock)
        group.node_lock = None

    async def _lock_for_writing(self) -> None:
        try:
            self._write_lock.acquire_nowait()  # the usual case: no timer to set up
        except anyio.WouldBlock:
            # As long as SQLite's busy handler would have waited; TimeoutError then, which
            # the Database reports as unavailable.
            with anyio.fail_after(BUSY_SECONDS):
                await self._write_lock.acquire()

    def _begin_write(self) -> Connection:
        if self._writer is None or self._writer.invalidated or self._writer.closed:
            self._writer = self._write_engine.connect()
        self._writer.begin()
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _close_all(self) -> None:
        while self._readers:
            self._readers.pop().close()
        self._close_writer()
        self._engine.dispose()

    async def close(self) -> None:
        """Close every connection, once the write under way (if any) has ended, or after
        BUSY_SECONDS regardless. The last close of a WAL database checkpoints it: in a
        thread. Transactions begun later still work, each on a connection of its own that
        is closed at its end."""
        locked = False
        with anyio.move_on_after(BUSY_SECONDS):
            await self._write_lock.acquire()
            locked = True
        try:
            self._closed = True
            if self._group is not None:
                await self._commit(self._group)
            await to_thread.run_sync(self._close_all)
        finally:
            if locked:
                self._write_lock.release()


@dataclass(eq=False)
class _Group:
    """Writers sharing one transaction and its commit."""

    conn: Connection
    node_lock: int | None  # the descriptor holding the node's writer lock
    committed: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None
    committer_queued: bool = False
