"""Repository of the durable jobs that follow a store (chatmedia.processing).

A job is one kind of work on one subject (a blob's sha256), at most one row per pair. A
claim moves the job's `run_after` to the end of the claim's lease and counts the attempt;
the worker renews the lease while it runs the job, so a worker that dies mid-job leaves a
job that comes due again soon after, on any node. A claim is known by its attempt number,
so a worker whose lease ran out (and whose job was claimed again) can neither finish nor
reschedule it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from chatmedia.db.engine import Conn, upsert
from chatmedia.db.schema import jobs

# The longest error text kept on a job.
_ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job; `attempts` counts this one."""

    seq: int
    kind: str
    subject: str
    priority: int
    attempts: int


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to add: `priority` 0 goes first; it is not due before `run_after`."""

    kind: str
    subject: str
    run_after: datetime
    priority: int = 0


class Jobs:
    """The job queue, on one connection (and so one transaction)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(self, new: Iterable[NewJob], now: datetime) -> None:
        """Queue jobs. A job of the same kind and subject already queued stays one job,
        with the earlier `run_after` and the higher priority of the two."""
        rows = [
            {"kind": j.kind, "subject": j.subject, "priority": j.priority, "attempts": 0,
             "run_after": j.run_after, "created_at": now}
            for j in new
        ]  # fmt: skip
        if not rows:
            return
        insert = upsert(self._conn, jobs)
        excluded = insert.excluded
        statement = insert.on_conflict_do_update(
            index_elements=[jobs.c.kind, jobs.c.subject],
            set_={
                "priority": sa.case(
                    (excluded.priority < jobs.c.priority, excluded.priority),
                    else_=jobs.c.priority,
                ),
                "run_after": sa.case(
                    (excluded.run_after < jobs.c.run_after, excluded.run_after),
                    else_=jobs.c.run_after,
                ),
            },
        )
        await self._conn.execute(statement, rows)

    async def claim_due(
        self, kinds: Iterable[str], now: datetime, lease: timedelta, limit: int
    ) -> list[Job]:
        """Claim up to `limit` jobs of these kinds that are due, first by priority, then
        the longest due; each for `lease` (PostgreSQL: jobs other nodes are claiming at
        the same moment are skipped, not waited for)."""
        due = (
            sa.select(jobs.c.seq, jobs.c.kind, jobs.c.subject, jobs.c.priority, jobs.c.attempts)
            .where(jobs.c.kind.in_(list(kinds)), jobs.c.run_after <= now)
            .order_by(jobs.c.priority, jobs.c.run_after)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (await self._conn.execute(due)).all()
        if not rows:
            return []
        await self._conn.execute(
            jobs.update()
            .where(jobs.c.seq.in_([row.seq for row in rows]))
            .values(run_after=now + lease, attempts=jobs.c.attempts + 1)
        )
        return [Job(row.seq, row.kind, row.subject, row.priority, row.attempts + 1) for row in rows]

    async def claim(self, kind: str, subject: str, now: datetime, lease: timedelta) -> Job | None:
        """Claim this one job now if it is queued and due (work asked for by a client
        that waits for it); None when it is not (done, or another worker has it)."""
        query = jobs.select().where(
            jobs.c.kind == kind, jobs.c.subject == subject, jobs.c.run_after <= now
        )
        row = (await self._conn.execute(query.with_for_update(skip_locked=True))).first()
        if row is None:
            return None
        await self._conn.execute(
            jobs.update()
            .where(jobs.c.seq == row.seq)
            .values(run_after=now + lease, attempts=jobs.c.attempts + 1)
        )
        return Job(row.seq, row.kind, row.subject, row.priority, row.attempts + 1)

    async def finish(self, job: Job) -> bool:
        """Remove a job once done; False when its claim was lost (its lease ran out and it
        was claimed again)."""
        result = await self._conn.execute(jobs.delete().where(*_claimed(job)))
        return result.rowcount == 1

    async def retry(self, job: Job, at: datetime, error: str) -> bool:
        """Let a job come due again at `at`, keeping why it failed; False when its claim
        was lost."""
        result = await self._conn.execute(
            jobs.update()
            .where(*_claimed(job))
            .values(run_after=at, last_error=error[:_ERROR_LENGTH])
        )
        return result.rowcount == 1

    async def renew(self, claimed: Iterable[Job], until: datetime) -> int:
        """Extend the leases of these claims to `until`; how many were still held (a lost
        claim is left to its new holder)."""
        held = [sa.and_(*_claimed(job)) for job in claimed]
        if not held:
            return 0
        result = await self._conn.execute(
            jobs.update().where(sa.or_(*held)).values(run_after=until)
        )
        return result.rowcount

    async def count(self, kind: str) -> int:
        """How many jobs of this kind are queued."""
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.kind == kind)
        return int((await self._conn.execute(query)).scalar_one())


def _claimed(job: Job) -> tuple[sa.ColumnElement[bool], ...]:
    return (jobs.c.seq == job.seq, jobs.c.attempts == job.attempts)
