"""SQLite's group commit (chatmedia.db.sqlite): writers that queue share one COMMIT, yet
each keeps the promises of its own transaction. (PostgreSQL commits each transaction.)"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from chatmedia.config import load_settings
from chatmedia.db import Database
from chatmedia.db.engine import DatabaseUnavailable
from chatmedia.db.keys import Keys
from chatmedia.db.migrate import upgrade

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    db = Database(load_settings({"CHATMEDIA_DATABASE_URL": url}, cwd=tmp_path).database_url)
    await upgrade(db)
    yield db
    await db.close()


@pytest.fixture
def commits() -> Iterator[list[object]]:
    """Every COMMIT any engine runs, while the test runs."""
    seen: list[object] = []

    def count(connection: Connection) -> None:
        seen.append(connection)

    event.listen(Engine, "commit", count)
    yield seen
    event.remove(Engine, "commit", count)


async def names(database: Database) -> list[str]:
    async with database.read() as conn:
        return sorted(k.name for k in await Keys(conn).all())


async def test_writers_that_queue_share_commits(database: Database, commits: list[object]) -> None:
    done: list[str] = []

    async def writer(n: int) -> None:
        async with database.write() as conn:
            await Keys(conn).create(f"k{n:02}")
            await anyio.sleep(0.01)  # the others queue meanwhile
        # Returned only once committed: a new read sees it.
        assert f"k{n:02}" in await names(database)
        done.append(f"k{n:02}")

    async with anyio.create_task_group() as tasks:
        for n in range(16):
            tasks.start_soon(writer, n)
    assert sorted(done) == await names(database) == [f"k{n:02}" for n in range(16)]
    assert len(commits) <= 4  # the first alone, then the queue in one or a few groups


async def test_a_failed_writer_is_undone_alone(database: Database, commits: list[object]) -> None:
    async def writer(name: str, fail: bool = False) -> None:
        async with database.write() as conn:
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
    assert await names(database) == ["first", "second", "third"]
    assert len(commits) < 3


async def test_a_cancelled_writer_is_undone_and_its_group_still_commits(
    database: Database,
) -> None:
    async def writer(name: str, seconds: float) -> None:
        async with database.write() as conn:
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
    assert await names(database) == ["first"]
    async with database.write() as conn:  # and the writer is free for the next one
        await Keys(conn).create("next")
    assert await names(database) == ["first", "next"]


async def test_a_failed_commit_fails_every_writer_of_the_group(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = Connection.commit
    failures = iter([True])

    def commit(self: Connection, *args: Any) -> None:
        if next(failures, False):
            error = sqlite3.OperationalError("disk I/O error")
            raise sa.exc.OperationalError("COMMIT", None, error)
        real_commit(self, *args)

    async with database.write() as conn:  # opened before the patch: the writer exists
        await Keys(conn).create("before")
    monkeypatch.setattr(Connection, "commit", commit)
    outcomes: dict[str, str] = {}

    async def writer(name: str) -> None:
        try:
            async with database.write() as conn:
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
    stored = await names(database)
    assert stored == ["before", *sorted(n for n, o in outcomes.items() if o == "committed")]
