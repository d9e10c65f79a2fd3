"""The job queue (chatmedia.db.jobs) on every database: due jobs by priority, one claim at a
time even when workers claim together (PostgreSQL: SKIP LOCKED), a dead worker's job due
again when its lease ends, and a lost claim that can neither finish nor reschedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from chatmedia.db import Database
from chatmedia.db.jobs import Job, Jobs, NewJob

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


async def claim(database: Database, at: datetime, limit: int = 10) -> list[Job]:
    async with database.write() as conn:
        return await Jobs(conn).claim_due(["scan"], at, LEASE, limit)


async def add(database: Database, *jobs: NewJob) -> None:
    async with database.write() as conn:
        await Jobs(conn).add(jobs, NOW)


async def test_due_jobs_are_claimed_by_priority_then_age(database: Database) -> None:
    await add(
        database,
        NewJob("scan", "late", NOW + timedelta(seconds=5)),
        NewJob("scan", "rescan", NOW - timedelta(seconds=9), priority=1),
        NewJob("scan", "new", NOW),
        NewJob("scan", "older", NOW - timedelta(seconds=1)),
        NewJob("other", "elsewhere", NOW),
    )
    claimed = await claim(database, NOW)
    assert [j.subject for j in claimed] == ["older", "new", "rescan"]
    assert {j.attempts for j in claimed} == {1}
    assert await claim(database, NOW) == []  # leased
    assert [j.subject for j in await claim(database, NOW + timedelta(seconds=5))] == ["late"]


async def test_adding_a_queued_job_keeps_one_with_the_earlier_time_and_higher_priority(
    database: Database,
) -> None:
    await add(database, NewJob("scan", "a", NOW + timedelta(hours=1), priority=1))
    await add(database, NewJob("scan", "a", NOW, priority=0))
    await add(database, NewJob("scan", "a", NOW + timedelta(hours=2), priority=1))
    async with database.read() as conn:
        assert await Jobs(conn).count("scan") == 1
    [job] = await claim(database, NOW)
    assert job.priority == 0


async def test_a_dead_workers_job_comes_due_when_its_lease_ends(database: Database) -> None:
    await add(database, NewJob("scan", "blob", NOW))
    [first] = await claim(database, NOW)
    assert await claim(database, NOW + LEASE - timedelta(seconds=1)) == []
    [second] = await claim(database, NOW + LEASE)
    assert (second.seq, second.attempts) == (first.seq, 2)
    async with database.write() as conn:
        jobs = Jobs(conn)
        assert not await jobs.finish(first)  # its claim was lost
        assert not await jobs.retry(first, NOW, "late")
        assert await jobs.retry(second, NOW + timedelta(seconds=3), "clamd: refused")
    assert await claim(database, NOW + timedelta(seconds=2)) == []
    [third] = await claim(database, NOW + timedelta(seconds=3))
    async with database.write() as conn:
        assert await Jobs(conn).finish(third)
        assert await Jobs(conn).count("scan") == 0


async def test_workers_claiming_together_never_share_a_job(database: Database) -> None:
    await add(database, *(NewJob("scan", f"blob-{n}", NOW) for n in range(60)))
    claims: list[list[Job]] = []

    async def worker() -> None:
        while batch := await claim(database, NOW, limit=3):
            claims.append(batch)

    async with anyio.create_task_group() as tasks:
        for _ in range(4):
            tasks.start_soon(worker)
    subjects = [job.subject for batch in claims for job in batch]
    assert sorted(subjects) == sorted(f"blob-{n}" for n in range(60))
