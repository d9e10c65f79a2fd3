"""What several nodes over one database rely on, run against every database: event ids
commit in order, each delivery is claimed by one claimer at a time, exclusive work runs
once, and (on PostgreSQL) every process is woken when any logs an event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from chatmedia.access.principal import DEFAULT_TENANT
from chatmedia.caching.records import RecordCache
from chatmedia.caching.ring import ChangeRing
from chatmedia.db import Database
from chatmedia.db import listen as listen_module
from chatmedia.db.changes import file_changed
from chatmedia.db.events import Events
from chatmedia.db.listen import listen_for_events
from chatmedia.db.pages import Conversations
from chatmedia.db.webhooks import Outbox, Webhook, Webhooks
from chatmedia.models import FileRecord
from chatmedia.services import Services, open_services

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def test_a_later_append_waits_for_the_earlier_to_commit(database: Database) -> None:
    """A reader that has seen id N must never later find a new id below N: the second
    append cannot finish (and take its id) while the first is uncommitted."""
    second_done = anyio.Event()
    seqs: dict[str, int] = {}

    async def second() -> None:
        async with database.write() as conn:
            seqs["second"] = (await Events(conn, DEFAULT_TENANT).append("t", "c", {}, NOW)).seq
        second_done.set()

    async with anyio.create_task_group() as tasks, database.write() as conn:
        seqs["first"] = (await Events(conn, DEFAULT_TENANT).append("t", "c", {}, NOW)).seq
        tasks.start_soon(second)
        with anyio.move_on_after(0.5):
            await second_done.wait()
        assert not second_done.is_set()  # still waiting for our commit
    assert seqs["second"] > seqs["first"]
    async with database.read() as conn:
        assert [
            e.seq for e in await Events(conn, DEFAULT_TENANT).after(0, Conversations(), 10)
        ] == sorted(seqs.values())


async def test_concurrent_claimers_never_share_a_delivery(database: Database) -> None:
    async with database.write() as conn:
        hook = Webhook("wh_1", "https://example.com/h", ("*",), "s" * 32, NOW, DEFAULT_TENANT)
        await Webhooks(conn, DEFAULT_TENANT).create(hook)
        for n in range(40):  # 40 queues of one delivery each: every one is a head
            await Events(conn, DEFAULT_TENANT).append("message.created", f"c{n}", {"n": n}, NOW)
    claimed: list[int] = []

    async def claimer() -> None:
        while True:
            async with database.write() as conn:
                batch = await Outbox(conn).claim_due(
                    NOW + timedelta(seconds=1), timedelta(minutes=1), limit=3
                )
            if not batch:
                return
            claimed.extend(c.delivery.seq for c in batch)

    async with anyio.create_task_group() as tasks:
        for _ in range(4):
            tasks.start_soon(claimer)
    assert len(claimed) == 40
    assert len(set(claimed)) == 40


async def test_exclusive_work_runs_on_one_holder(database: Database) -> None:
    async with database.exclusive("sweep") as first:
        assert first
        async with database.exclusive("sweep") as second:
            # PostgreSQL: another session cannot have it. SQLite serves one machine and
            # serializes writers itself, so there every holder may go ahead.
            assert second is not database.is_postgresql
        async with database.exclusive("other") as other:
            assert other
    async with database.exclusive("sweep") as again:  # released at the end of the block
        assert again


async def test_listeners_are_woken_by_appends_elsewhere(database: Database) -> None:
    stopping = anyio.Event()
    wakes: list[int] = []
    cache = RecordCache(ChangeRing(), 10, trusted=False)
    if not database.is_postgresql:
        with anyio.fail_after(1):  # nothing to listen to: it returns at once
            await listen_for_events(database, lambda: wakes.append(1), cache, stopping)
        return
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listen_for_events, database, lambda: wakes.append(1), cache, stopping)
        with anyio.fail_after(5):
            while not wakes:  # the wake-up that says "listening now: catch up"
                await anyio.sleep(0.01)
        async with database.write() as conn:
            await Events(conn, DEFAULT_TENANT).append("message.created", "c1", {}, NOW)
        with anyio.fail_after(5):
            while len(wakes) < 2:
                await anyio.sleep(0.01)
        stopping.set()


async def test_a_listener_whose_connection_breaks_midway_listens_again(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that stops answering can leave asyncpg's connection mid-operation: the
    # next query raises InternalClientError. The listener reconnects, as for any outage.
    import asyncpg

    real_listen = listen_module._listen
    calls: list[int] = []

    async def breaking_once(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise asyncpg.InternalClientError("cannot switch to state 12")
        await real_listen(*args)

    monkeypatch.setattr(listen_module, "_listen", breaking_once)
    monkeypatch.setattr(listen_module, "RETRY_SECONDS", 0.05)
    if not database.is_postgresql:  # nothing to listen to: it never connects
        await listen_for_events(
            database, lambda: None, RecordCache(ChangeRing(), 10), anyio.Event()
        )
        assert calls == []
        return
    stopping = anyio.Event()
    wakes: list[int] = []
    cache = RecordCache(ChangeRing(), 10, trusted=False)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listen_for_events, database, lambda: wakes.append(1), cache, stopping)
        with anyio.fail_after(5):
            while not wakes:  # listening again after the break
                await anyio.sleep(0.01)
        stopping.set()
    assert len(calls) == 2


async def test_a_cache_hears_other_processes_changes(services: Services) -> None:
    """A process's cache forgets a row another process changed as soon as that commits: on
    SQLite through the node's ring, on PostgreSQL through its listener, and there it
    answers only while the listener proves alive."""
    stopping = anyio.Event()
    cache = services.cache
    record = FileRecord(
        id="cached-1", type="HOSTED", name="a.png", stored_name="cached-1.png",
        content_type="image/png", size=1, sha256="0" * 64, conversation_id=None,
        properties={}, created_at=NOW, tenant=DEFAULT_TENANT,
    )  # fmt: skip
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listen_for_events, services.db, lambda: None, cache, stopping)
        with anyio.fail_after(5):
            while cache.file("cached-1") is None:  # PostgreSQL: trusted once listening
                cache.keep_file(record, cache.version())
                await anyio.sleep(0.01)
        other = open_services(services.settings)  # another process, on this node or not
        try:
            async with other.db.write():
                file_changed("cached-1")
        finally:
            await other.close()
        with anyio.fail_after(1):
            while cache.file("cached-1") is not None:
                await anyio.sleep(0.01)
        cache.keep_file(record, cache.version())
        assert cache.file("cached-1") == record
        stopping.set()
    # Without a listener a PostgreSQL node's cache answers nothing; SQLite needs none.
    assert (cache.file("cached-1") is None) is services.db.is_postgresql
