"""SQLite's transactions (chatmedia.db.sqlite): reads inline on pooled synchronous
connections, writers queued in the process before BEGIN IMMEDIATE and sharing commits, and
a 503 rather than a hang when the write lock does not come."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from anyio import to_thread
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from chatmedia.db import Database, DatabaseUnavailable, sqlite
from chatmedia.db.engine import Conn
from chatmedia.db.keys import Keys
from chatmedia.db.migrate import upgrade
from chatmedia.db.writer_queue import NodeWriterLock

pytestmark = pytest.mark.anyio


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


async def write_waits_for(db: Database, name: str, let_go: Callable[[], object]) -> None:
    """A write of key `name` is still waiting after 0.3 s while reads go on, and is done
    within 5 s of `let_go()`."""
    done = anyio.Event()

    async def write() -> None:
        async with db.write() as conn:
            await Keys(conn).create(name)
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(write)
        with anyio.move_on_after(0.3):
            await done.wait()
        assert not done.is_set()
        assert name not in await names(db)  # reads go on meanwhile
        let_go()
        with anyio.fail_after(5):
            await done.wait()
    assert name in await names(db)


async def test_writers_of_every_process_queue_on_the_node_lock(
    db: Database, tmp_path: Path
) -> None:
    """A writer waits while another process's writer holds the node's lock (even before
    that one has touched SQLite, whose busy handler would sleep), and goes on as soon as
    it is let go."""
    other = NodeWriterLock(f"{tmp_path / 'meta.db'}-writers", 5)  # another process's
    held = await other.acquire()
    await write_waits_for(db, "queued", lambda: other.release(held))
    assert await names(db) == ["queued"]
    # Its own lock is let go after each commit: the other process gets it at once.
    other.release(await other.acquire())


def _hold_node_lock(path: str, held: Any, release: Any) -> None:
    async def hold() -> None:
        lock = NodeWriterLock(path, 5)
        fd = await lock.acquire()
        held.set()
        release.wait(30)
        lock.release(fd)

    anyio.run(hold)


async def test_a_writer_of_another_process_holding_the_node_lock_is_waited_for(
    db: Database, tmp_path: Path
) -> None:
    """As above, with the other writer in a process of its own."""
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    other = context.Process(
        target=_hold_node_lock, args=(f"{tmp_path / 'meta.db'}-writers", held, release)
    )
    other.start()
    try:
        assert await to_thread.run_sync(held.wait, 30)
        await write_waits_for(db, "after the other", release.set)
        assert await names(db) == ["after the other"]
    finally:
        release.set()
        await to_thread.run_sync(other.join, 30)


async def test_a_writer_that_gives_up_on_the_node_lock_leaves_it_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "BUSY_SECONDS", 0.2)
    db = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    await upgrade(db)
    other = NodeWriterLock(f"{tmp_path / 'meta.db'}-writers", 5)
    try:
        held = await other.acquire()
        with pytest.raises(DatabaseUnavailable):
            async with db.write() as conn:
                await Keys(conn).create("never")
        other.release(held)  # the abandoned wait takes it, then lets it go at once
        with anyio.fail_after(5):
            other.release(await other.acquire())
        async with db.write() as conn:
            await Keys(conn).create("later")
        assert await names(db) == ["later"]
    finally:
        await db.close()


async def test_a_writer_that_takes_no_node_lock_is_waited_for(db: Database, tmp_path: Path) -> None:
    """A writer that does not take the node's lock (not chatmedia's) is still waited for,
    in SQLite's busy handler, without holding up the event loop."""
    async with db.write() as conn:  # the writer connection is open from now on
        await Keys(conn).create("first")
    other = sqlite3.connect(tmp_path / "meta.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        await write_waits_for(db, "second", lambda: other.execute("COMMIT"))
    finally:
        other.close()
    assert await names(db) == ["first", "second"]


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


# Group commit: writers that queue share one COMMIT, yet each keeps the promises of its own
# transaction.


@pytest.fixture
def commits() -> Iterator[list[object]]:
    """Every COMMIT any engine runs, while the test runs."""
    seen: list[object] = []

    def count(connection: Connection) -> None:
        seen.append(connection)

    event.listen(Engine, "commit", count)
    yield seen
    event.remove(Engine, "commit", count)


async def test_writers_that_queue_share_commits(db: Database, commits: list[object]) -> None:
    done: list[str] = []

    async def writer(n: int) -> None:
        async with db.write() as conn:
            await Keys(conn).create(f"k{n:02}")
            await anyio.sleep(0.01)  # the others queue meanwhile
        # Returned only once committed: a new read sees it.
        assert f"k{n:02}" in await names(db)
        done.append(f"k{n:02}")

    async with anyio.create_task_group() as tasks:
        for n in range(16):
            tasks.start_soon(writer, n)
    assert sorted(done) == sorted(await names(db)) == [f"k{n:02}" for n in range(16)]
    assert len(commits) <= 4  # the first alone, then the queue in one or a few groups


async def test_a_failed_writer_is_undone_alone(db: Database, commits: list[object]) -> None:
    async def writer(name: str, fail: bool = False) -> None:
        async with db.write() as conn:
            await Keys(conn).create(name)
            await anyio.sleep(0.02)
            if fail:
                raise RuntimeError("boom")

    async def failing() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await writer("lost", fail=True)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(writer, "first")
        await anyio.sleep(0.005)
        tasks.start_soon(writer, "second")
        tasks.start_soon(failing)
        tasks.start_soon(writer, "third")
    assert sorted(await names(db)) == ["first", "second", "third"]
    assert len(commits) < 3


async def test_a_cancelled_writer_is_undone_and_its_group_still_commits(
    db: Database,
) -> None:
    async def writer(name: str, seconds: float) -> None:
        async with db.write() as conn:
            await Keys(conn).create(name)
            await anyio.sleep(seconds)

    async def cancelled() -> None:
        with anyio.move_on_after(0.1):
            await writer("lost", 10)

    with anyio.fail_after(5):  # nobody left to commit "first" would hang here
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer, "first", 0.05)  # ends while "lost" waits: hands on
            await anyio.sleep(0.01)
            tasks.start_soon(cancelled)
    assert sorted(await names(db)) == ["first"]
    async with db.write() as conn:  # and the writer is free for the next one
        await Keys(conn).create("next")
    assert sorted(await names(db)) == ["first", "next"]


async def test_a_failed_commit_fails_every_writer_of_the_group(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = Connection.commit
    failures = iter([True])

    def commit(self: Connection, *args: Any) -> None:
        if next(failures, False):
            error = sqlite3.OperationalError("disk I/O error")
            raise sa.exc.OperationalError("COMMIT", None, error)
        real_commit(self, *args)

    async with db.write() as conn:  # opened before the patch: the writer exists
        await Keys(conn).create("before")
    monkeypatch.setattr(Connection, "commit", commit)
    outcomes: dict[str, str] = {}

    async def writer(name: str) -> None:
        try:
            async with db.write() as conn:
                await Keys(conn).create(name)
                await anyio.sleep(0.01)
        except DatabaseUnavailable:
            outcomes[name] = "unavailable"
        else:
            outcomes[name] = "committed"

    async with anyio.create_task_group() as tasks:
        for name in ("a", "b", "c"):
            tasks.start_soon(writer, name)
    # "a" committed alone or with the others: whichever writers shared the failed commit
    # were all told so, and none of them is stored.
    assert "unavailable" in outcomes.values()
    stored = sorted(await names(db))
    assert stored == ["before", *sorted(n for n, o in outcomes.items() if o == "committed")]
