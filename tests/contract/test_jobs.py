"""The job queue (chatmedia.db.jobs) on every database: due jobs by priority, one claim at a
time even when workers claim together (PostgreSQL: SKIP LOCKED), a dead worker's job due
again when its lease ends, a lost claim that can neither finish, reschedule nor renew; and
the runner (chatmedia.processing.jobs) holding a job as long as it runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from chatmedia.db import Database
from chatmedia.db.jobs import Job, Jobs, NewJob
from chatmedia.processing import jobs as runner
from chatmedia.services import Services

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


async def test_a_renewed_claim_stays_held_and_a_lost_one_is_not_renewed(
    database: Database,
) -> None:
    await add(database, NewJob("scan", "blob", NOW))
    [first] = await claim(database, NOW)
    async with database.write() as conn:
        assert await Jobs(conn).renew([first], NOW + 2 * LEASE) == 1
    assert await claim(database, NOW + 2 * LEASE - timedelta(seconds=1)) == []  # still held
    [second] = await claim(database, NOW + 2 * LEASE)  # not renewed again: it ran out
    async with database.write() as conn:
        jobs = Jobs(conn)
        assert await jobs.renew([], NOW + 9 * LEASE) == 0
        # The first worker's claim is lost: renewing both extends the second's alone.
        assert await jobs.renew([first, second], NOW + 4 * LEASE) == 1
    assert await claim(database, NOW + 4 * LEASE - timedelta(seconds=1)) == []
    [third] = await claim(database, NOW + 4 * LEASE)
    assert third.attempts == 3


async def test_the_runner_holds_a_job_for_as_long_as_it_runs(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = timedelta(seconds=1)
    monkeypatch.setattr(runner, "LEASE", lease)
    monkeypatch.setattr(runner, "RENEW_SECONDS", 0.2)
    started, release = anyio.Event(), anyio.Event()
    runs: list[Job] = []

    async def slow(services: Services, job: Job) -> None:
        runs.append(job)
        started.set()
        await release.wait()
        async with services.db.write() as conn:
            await Jobs(conn).finish(job)

    async def others_claim() -> list[Job]:
        async with services.db.write() as conn:
            return await Jobs(conn).claim_due(["slow"], datetime.now(UTC), lease, 1)

    async with services.db.write() as conn:
        await Jobs(conn).add([NewJob("slow", "blob", datetime.now(UTC))], datetime.now(UTC))
    stopping = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runner.run_jobs_forever, services, {"slow": slow}, stopping)
        with anyio.fail_after(10):
            await started.wait()
        for _ in range(15):  # three leases long, another worker finds it held throughout
            await anyio.sleep(0.2)
            assert await others_claim() == []
        assert len(runs) == 1  # nor did this runner take it a second time
        release.set()
        stopping.set()
        services.bus.notify()
    async with services.db.read() as conn:
        assert await Jobs(conn).count("slow") == 0
