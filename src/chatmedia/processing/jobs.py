"""The job runner: each worker of each node claims due jobs (chatmedia.db.jobs) and runs
them, a few at a time, with retries after a failure and after a crash.

A claim lasts LEASE and is renewed every RENEW_SECONDS while its job runs, for however long
it runs; a job whose worker died comes due again within LEASE, on any node.

A handler finishes its job itself, in the transaction that records its result, so a
result and the end of its job commit together. It raises RetryLater when the job cannot
be done yet (a scanner that does not answer); any other exception is a bug, logged, and
retried the same way. Retries back off exponentially, to at most MAX_DELAY.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import anyio

from chatmedia.db.jobs import Job, Jobs
from chatmedia.services import BACKEND_OUTAGES, Services, is_outage

log = logging.getLogger("chatmedia.processing")

Handler = Callable[[Services, Job], Awaitable[None]]

# Jobs one worker runs at once.
CONCURRENCY = 4
# How long a claim lasts unless renewed: a job whose worker died comes due again by then.
LEASE = timedelta(seconds=15)
RENEW_SECONDS = LEASE.total_seconds() / 3
MAX_DELAY = timedelta(seconds=30)
# How often a worker looks for due jobs when nothing woke it (retries, other nodes' jobs).
POLL_SECONDS = 1.0


# The claims this process is running jobs for, renewed together.
_running: set[Job] = set()


class RetryLater(Exception):
    """The job cannot be done now; the message says why (kept on the job)."""


@contextmanager
def running(job: Job) -> Iterator[None]:
    """Keep `job`'s claim renewed while the block runs it."""
    _running.add(job)
    try:
        yield
    finally:
        _running.discard(job)


async def run_jobs_forever(
    services: Services, handlers: Mapping[str, Handler], stopping: anyio.Event
) -> None:
    """Claim due jobs of the kinds in `handlers` and run them, up to CONCURRENCY at once,
    woken by this process's events and at least every POLL_SECONDS, until `stopping` is
    set (jobs under way are let finish)."""
    slots = anyio.Semaphore(CONCURRENCY)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_renew_forever, services, stopping)
        while not stopping.is_set():
            version = services.bus.version
            claimed: list[Job] = []
            if slots.value:
                claimed = await _claim(services, handlers, slots.value)
            for job in claimed:
                await slots.acquire()
                tasks.start_soon(_run, services, handlers[job.kind], job, slots)
            if not claimed:
                with anyio.move_on_after(POLL_SECONDS):
                    await services.bus.wait(version)


async def _claim(services: Services, handlers: Mapping[str, Handler], free: int) -> list[Job]:
    try:
        async with services.db.write() as conn:
            return await Jobs(conn).claim_due(handlers, datetime.now(UTC), LEASE, free)
    except Exception as e:
        if is_outage(e):
            log.warning("could not claim jobs (%s); trying again", e)
        else:
            log.exception("could not claim jobs; trying again")
    return []


async def _renew_forever(services: Services, stopping: anyio.Event) -> None:
    """Every RENEW_SECONDS, extend the leases of the jobs this process runs, until
    `stopping` is set."""
    while not stopping.is_set():
        with anyio.move_on_after(RENEW_SECONDS):
            await stopping.wait()
        if not _running:
            continue
        try:
            async with services.db.write() as conn:
                await Jobs(conn).renew(list(_running), datetime.now(UTC) + LEASE)
        except Exception as e:
            if is_outage(e):
                log.warning("could not renew the claims of running jobs (%s)", e)
            else:
                log.exception("could not renew the claims of running jobs")


async def _run(services: Services, handler: Handler, job: Job, slots: anyio.Semaphore) -> None:
    try:
        with running(job):
            await handler(services, job)
    except RetryLater as e:
        await reschedule(services, job, str(e))
    except BACKEND_OUTAGES as e:
        await reschedule(services, job, f"backend outage: {e}")
    except Exception as e:
        log.exception("%s job for %s failed", job.kind, job.subject)
        await reschedule(services, job, f"{type(e).__name__}: {e}")
    finally:
        slots.release()


async def reschedule(services: Services, job: Job, error: str) -> None:
    """Let the job come due again after a delay doubling with each attempt (from 1 s, with
    up to 10 % jitter); if even that cannot be written, its lease runs out instead."""
    delay = min(timedelta(seconds=2 ** min(job.attempts - 1, 30)), MAX_DELAY)
    at = datetime.now(UTC) + delay * (1 + random.random() / 10)
    try:
        async with services.db.write() as conn:
            await Jobs(conn).retry(job, at, error)
    except Exception as e:
        log.warning("could not reschedule %s job for %s: %s", job.kind, job.subject, e)
