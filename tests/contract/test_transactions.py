"""What `Database.read()` and `write()` promise, run against every database: many tasks
may read and write at once, a read never sees an uncommitted write nor waits for one, and a
read that yields to other tasks keeps its own connection."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
import pytest

from chatmedia.access.principal import DEFAULT_TENANT
from chatmedia.db import Database
from chatmedia.db.events import Events, last_event_seq
from chatmedia.db.keys import Keys
from chatmedia.db.pages import Conversations

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def test_many_tasks_read_and_write_at_once(database: Database) -> None:
    counts: list[int] = []

    async def writer(n: int) -> None:
        for _ in range(5):
            async with database.write() as conn:
                await Events(conn, DEFAULT_TENANT).append("t", f"c{n}", {"n": n}, NOW)
                await anyio.sleep(0)  # let the others run while the transaction is open

    async def reader() -> None:
        for _ in range(20):
            async with database.read() as conn:
                last = await last_event_seq(conn)
                events = await Events(conn, DEFAULT_TENANT).after(0, Conversations(), 1000)
            # Ids commit in order: what a read sees is always 1..n, none missing.
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(events) >= last
            counts.append(last)
            await anyio.sleep(0)

    async with anyio.create_task_group() as tasks:
        for n in range(8):
            tasks.start_soon(writer, n)
        for _ in range(8):
            tasks.start_soon(reader)
    async with database.read() as conn:
        events = await Events(conn, DEFAULT_TENANT).after(0, Conversations(), 1000)
    assert [e.seq for e in events] == list(range(1, 41))
    assert sorted({e.conversation_id for e in events}) == [f"c{n}" for n in range(8)]
    assert len(counts) == 8 * 20
    assert max(counts) <= 40


async def test_a_read_does_not_see_an_uncommitted_write_nor_wait_for_it(
    database: Database,
) -> None:
    async with database.write() as conn:
        await Keys(conn).create("first")
    async with database.write() as conn:
        await Keys(conn).create("second")
        started = time.monotonic()
        async with database.read() as other:
            assert await Keys(other).count() == 1
        assert time.monotonic() - started < 1
    async with database.read() as conn:
        assert await Keys(conn).count() == 2


async def test_reads_go_on_during_a_long_write(database: Database) -> None:
    release = anyio.Event()
    writing = anyio.Event()

    async def long_write() -> None:
        async with database.write() as conn:
            await Keys(conn).create("slow")
            writing.set()
            await release.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(long_write)
        await writing.wait()
        with anyio.fail_after(2):
            for _ in range(50):
                async with database.read() as conn:
                    assert await Keys(conn).count() == 0
        release.set()
    async with database.read() as conn:
        assert await Keys(conn).count() == 1


async def test_reads_that_yield_meanwhile_each_keep_their_connection(
    database: Database,
) -> None:
    """Two read blocks open at once, each awaiting between its statements: neither sees
    the other's transaction end under it."""
    async with database.write() as conn:
        await Keys(conn).create("k")
    both_open = anyio.Event()
    opened = 0

    async def read_twice() -> None:
        nonlocal opened
        async with database.read() as conn:
            assert await Keys(conn).count() == 1
            opened += 1
            if opened == 2:
                both_open.set()
            await both_open.wait()
            assert await Keys(conn).count() == 1
        async with database.write() as conn:
            await Keys(conn).create("another")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_twice)
            tasks.start_soon(read_twice)
    async with database.read() as conn:
        assert await Keys(conn).count() == 3


async def test_a_failed_write_leaves_nothing_and_the_next_one_works(
    database: Database,
) -> None:
    async def fail() -> None:
        async with database.write() as conn:
            await Keys(conn).create("lost")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail()
    with anyio.move_on_after(0.1):  # cancelled mid-transaction
        async with database.write() as conn:
            await Keys(conn).create("lost too")
            await anyio.sleep(1)
    async with database.write() as conn:
        await Keys(conn).create("kept")
    async with database.read() as conn:
        assert [k.name for k in await Keys(conn).all()] == ["kept"]
