"""SQLite's transactions (chatmedia.db.sqlite): reads inline on pooled synchronous
connections, writers queued in the process before BEGIN IMMEDIATE, and a 503 rather than a
hang when the write lock does not come."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio import to_thread

from chatmedia.db import Database, DatabaseUnavailable, sqlite
from chatmedia.db.engine import Conn
from chatmedia.db.keys import Keys
from chatmedia.db.migrate import upgrade

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    await upgrade(database)
    yield database
    await database.close()


async def names(db: Database) -> list[str]:
    async with db.read() as conn:
        return [k.name for k in await Keys(conn).all()]


async def test_a_read_runs_inline_without_a_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await names(db)  # the pool's first connection is opened in a thread

    def no_thread(*_: object, **__: object) -> None:
        raise AssertionError("a read went to a thread")

    monkeypatch.setattr(to_thread, "run_sync", no_thread)
    async with db.read() as conn:
        assert await Keys(conn).count() == 0


async def test_a_read_keeps_its_snapshot_while_a_write_commits(db: Database) -> None:
    async with db.write() as conn:
        await Keys(conn).create("first")
    async with db.read() as conn:
        assert await Keys(conn).count() == 1
        async with db.write() as writer:
            await Keys(writer).create("second")
        assert await Keys(conn).count() == 1  # WAL: the snapshot predates the commit
    assert await names(db) == ["first", "second"]


async def test_writers_of_a_process_commit_in_the_order_they_came(db: Database) -> None:
    release = anyio.Event()
    holding = anyio.Event()

    async def first() -> None:
        async with db.write() as conn:
            await Keys(conn).create("w0")
            holding.set()
            await release.wait()

    async def writer(n: int) -> None:
        async with db.write() as conn:
            await Keys(conn).create(f"w{n}")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        await holding.wait()
        for n in range(1, 11):
            tasks.start_soon(writer, n)
            await anyio.sleep(0.01)  # each is queued before the next one starts
        release.set()
    assert await names(db) == [f"w{n}" for n in range(11)]


async def test_a_writer_gives_up_with_a_503_when_the_lock_does_not_come(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "BUSY_SECONDS", 0.2)
    release = anyio.Event()
    holding = anyio.Event()

    async def hold() -> None:
        async with db.write():
            holding.set()
            await release.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hold)
        await holding.wait()
        with pytest.raises(DatabaseUnavailable):
            async with db.write() as conn:
                await Keys(conn).create("never")
        release.set()
    async with db.write() as conn:  # the lock is free again
        await Keys(conn).create("later")
    assert await names(db) == ["later"]


async def test_a_writer_of_another_process_makes_it_a_503_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "BUSY_SECONDS", 0.2)  # the busy timeout of new connections
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    await upgrade(db)
    other = sqlite3.connect(tmp_path / "meta.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseUnavailable):
            async with db.write() as conn:
                await Keys(conn).create("never")
        assert await names(db) == []  # reads go on meanwhile
        other.execute("ROLLBACK")
        async with db.write() as conn:
            await Keys(conn).create("later")
        assert await names(db) == ["later"]
    finally:
        other.close()
        await db.close()


async def test_a_write_inside_a_write_of_the_same_task_fails_at_once(db: Database) -> None:
    async with db.write() as conn:
        await Keys(conn).create("outer")
        with pytest.raises(RuntimeError, match="already held"):
            async with db.write():
                pass
    assert await names(db) == ["outer"]


async def test_savepoints_undo_only_their_block(db: Database) -> None:
    async def undone(conn: Conn) -> None:
        async with conn.begin_nested():
            await Keys(conn).create("undone")
            raise RuntimeError("undo")

    async with db.write() as conn:
        await Keys(conn).create("kept")
        with pytest.raises(RuntimeError, match="undo"):
            await undone(conn)
    assert await names(db) == ["kept"]


async def test_transactions_still_work_after_close(db: Database) -> None:
    await db.close()
    async with db.write() as conn:
        await Keys(conn).create("k")
    assert await names(db) == ["k"]
