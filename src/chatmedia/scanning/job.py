"""The scan job: scans stored bytes whose inline scan did not finish (or that new
signatures must see again), streamed from the store, and records what clamd said."""

from __future__ import annotations

import logging
from contextlib import aclosing
from datetime import UTC, datetime

from chatmedia.db.jobs import Job, Jobs
from chatmedia.db.scans import Scans
from chatmedia.models import ScanState
from chatmedia.processing.jobs import RetryLater
from chatmedia.scanning.clamd import ScanFailed, ScannerUnavailable
from chatmedia.scanning.outcome import apply_scan
from chatmedia.services import Services
from chatmedia.storage import BlobMissing

log = logging.getLogger("chatmedia.scanning")

SCAN_JOB = "scan"
# Scans of new content go first; background rescans (new signatures) wait for them.
SCAN_PRIORITY = 0
RESCAN_PRIORITY = 1
# Times clamd may answer with an error for the same bytes before their scan is `error`
# (an unreachable clamd is waited for, however long).
ATTEMPTS_ON_ERROR = 3


async def scan_job(services: Services, job: Job) -> None:
    """Scan blob `job.subject` and record the result; raises RetryLater while clamd
    cannot give one."""
    scanner = services.scanner
    if scanner is None:
        raise RetryLater("scanning is off on this node")
    sha256 = job.subject
    # 1. Bytes deleted meanwhile need no scan.
    async with services.db.read() as conn:
        known = await Scans(conn).state(sha256)
    if known is None:
        await _finish(services, job)
        return
    before, _ = known
    size = await services.store.stat(sha256)
    if size is None:
        raise RetryLater(f"blob {sha256} is not in the store")
    # 2. Scan, or say why not.
    version = scanner.version
    now = datetime.now(UTC)
    if size.size > services.settings.scan_max_size:
        state = ScanState("skipped", scanned_at=now)
    else:
        state = await _scan(services, job, sha256, size.size)
    # 3. Record it; a background rescan (new signatures) that finds nothing new changes
    # nothing clients see.
    async with services.db.write() as conn:
        scans = Scans(conn)
        if job.priority == RESCAN_PRIORITY and before is not None and before.status == state.status:
            await scans.set_state(sha256, before, version)
        else:
            if before is not None and before.status == "infected" != state.status:
                await scans.release(sha256, "rescan", now)  # no longer found: let it in
            await apply_scan(conn, services.settings.public_url, sha256, state, version)
        await Jobs(conn).finish(job)
    services.bus.notify()


async def _scan(services: Services, job: Job, sha256: str, size: int) -> ScanState:
    assert services.scanner is not None
    try:
        async with aclosing(await services.store.open_range(sha256, 0, size)) as chunks:
            verdict = await services.scanner.scan(chunks)
    except ScannerUnavailable as e:
        raise RetryLater(f"clamd: {e}") from e
    except BlobMissing as e:
        raise RetryLater(f"blob {sha256} is missing from the store") from e
    except ScanFailed as e:
        if job.attempts < ATTEMPTS_ON_ERROR:
            raise RetryLater(f"clamd answered: {e}") from e
        log.warning("scanning blob %s failed for good: %s", sha256, e)
        return ScanState("error", scanned_at=datetime.now(UTC))
    if verdict.signature is None:
        return ScanState("clean", scanned_at=datetime.now(UTC))
    return ScanState("infected", verdict.signature, datetime.now(UTC))


async def _finish(services: Services, job: Job) -> None:
    async with services.db.write() as conn:
        await Jobs(conn).finish(job)
